#include "plugin/advertiser.h"

#include <glog/logging.h>

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "dht/node_id.h"

namespace shoal::plugin {
namespace {

// Digests announced by one queued op: a full store at start becomes ops of
// this many, run one after another, so at most 64 lookups are in flight
// instead of one per stored blob. One op's requests fit in a peer's
// per-source burst (400, dht/rate_limiter.h).
// Ops are also paced (Advertiser::kAnnounceSpacing), so the sustained rate
// stays under the peers' limit too.
constexpr size_t kMaxDigestsPerOp = 64;

std::vector<dht::NodeId> KeysOf(const std::vector<std::string>& digests) {
  std::vector<dht::NodeId> keys;
  keys.reserve(digests.size());
  for (const std::string& digest : digests) {
    keys.push_back(dht::NodeId::ForKey(digest));
  }
  return keys;
}

// Splits "name:port" (a seed that is not an IP literal).
absl::StatusOr<std::pair<std::string, uint16_t>> ParseNamedSeed(
    const std::string& seed) {
  const size_t colon = seed.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 || seed.find(':') != colon ||
      !absl::SimpleAtoi(seed.substr(colon + 1), &port) || port == 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "seed \"", seed, "\": want IP:port, [IPv6]:port or name:port"));
  }
  return std::make_pair(seed.substr(0, colon), static_cast<uint16_t>(port));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Advertiser>> Advertiser::Create(
    const std::string& ip, uint16_t port, dht::NodeOptions options,
    absl::Duration announce_spacing) {
  absl::StatusOr<std::unique_ptr<dht::Dht>> dht =
      dht::Dht::Create(ip, port, std::move(options));
  if (!dht.ok()) return dht.status();
  return std::unique_ptr<Advertiser>(
      new Advertiser(*std::move(dht), announce_spacing));
}

Advertiser::~Advertiser() {
  // No resolver post may arrive once the node is gone.
  if (resolver_thread_.joinable()) {
    {
      absl::MutexLock lock(&stop_mu_);
      stop_resolving_ = true;
    }
    resolver_thread_.join();
  }
  // Tears the node down on the loop thread and stops the loop; queued ops
  // and pending callbacks (which use this object) are dropped unrun.
  dht_.reset();
}

void Advertiser::Start(std::vector<dht::Endpoint> seeds) {
  dht_->RunOnLoop([this, seeds = std::move(seeds)](dht::Node& node) mutable {
    Enqueue(node, Op{OpKind::kBootstrap, std::move(seeds), {}});
  });
}

absl::Status Advertiser::StartResolving(std::vector<std::string> seeds,
                                        dht::DnsResolverOptions dns,
                                        absl::Duration reresolve_interval) {
  if (reresolve_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("re-resolve interval must be positive");
  }
  std::vector<dht::Endpoint> literal;
  std::vector<std::pair<std::string, uint16_t>> names;
  for (const std::string& seed : seeds) {
    absl::StatusOr<dht::Endpoint> ep = dht::Endpoint::Parse(seed);
    if (ep.ok()) {
      literal.push_back(*ep);
      continue;
    }
    absl::StatusOr<std::pair<std::string, uint16_t>> named =
        ParseNamedSeed(seed);
    if (!named.ok()) return named.status();
    names.push_back(*std::move(named));
  }
  if (names.empty()) {
    Start(std::move(literal));
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<dht::DnsResolver>> resolver =
      dht::DnsResolver::Create(dns);
  if (!resolver.ok()) return resolver.status();
  resolver_thread_ =
      std::thread([this, r = *std::move(resolver), names = std::move(names),
                   literal = std::move(literal), reresolve_interval]() mutable {
        ResolveLoop(std::move(r), std::move(names), std::move(literal),
                    reresolve_interval);
      });
  return absl::OkStatus();
}

void Advertiser::ResolveLoop(
    std::unique_ptr<dht::DnsResolver> resolver,
    std::vector<std::pair<std::string, uint16_t>> names,
    std::vector<dht::Endpoint> literal, absl::Duration interval) {
  while (true) {
    std::vector<dht::Endpoint> seeds = literal;
    for (const auto& [name, port] : names) {
      absl::StatusOr<std::vector<dht::Endpoint>> found =
          resolver->Resolve(name, port);
      if (!found.ok()) {
        LOG_EVERY_T(WARNING, 300) << "dht: cannot resolve seed name=" << name
                                  << " error=" << found.status();
        continue;
      }
      seeds.insert(seeds.end(), found->begin(), found->end());
    }
    dht_->RunOnLoop([this, seeds = std::move(seeds)](dht::Node& node) mutable {
      OnSeedsResolved(node, std::move(seeds));
    });

    absl::MutexLock lock(&stop_mu_);
    if (stop_mu_.AwaitWithTimeout(absl::Condition(&stop_resolving_),
                                  interval)) {
      return;
    }
  }
}

void Advertiser::OnSeedsResolved(dht::Node& node,
                                 std::vector<dht::Endpoint> seeds) {
  std::vector<dht::Endpoint> others;
  bool fresh = false;
  for (const dht::Endpoint& seed : seeds) {
    if (seed == endpoint()) continue;  // A headless Service lists us too.
    others.push_back(seed);
    fresh |= known_seeds_.insert(seed).second;
  }
  if (!started_) {
    Enqueue(node, Op{OpKind::kBootstrap, std::move(others), {}});
    return;
  }
  // TODO: a routing table that is not empty but holds only dead contacts
  // does not trigger a new bootstrap; the node waits for new seed addresses
  // or for its contacts to time out.
  if (others.empty() || (!fresh && node.routing_table().size() > 0)) return;
  VLOG(1) << "dht: bootstrapping again seeds=" << others.size()
          << " fresh=" << fresh;
  // Ahead of queued provides, like the first join.
  queue_.push_front(Op{OpKind::kBootstrap, std::move(others), {}});
  RunNext(node);
}

void Advertiser::Advertise(std::vector<std::string> digests) {
  if (digests.empty()) return;
  dht_->RunOnLoop(
      [this, digests = std::move(digests)](dht::Node& node) mutable {
        Enqueue(node, Op{OpKind::kProvide, {}, std::move(digests)});
      });
}

void Advertiser::Withdraw(std::vector<std::string> digests) {
  if (digests.empty()) return;
  dht_->RunOnLoop(
      [this, digests = std::move(digests)](dht::Node& node) mutable {
        Enqueue(node, Op{OpKind::kWithdraw, {}, std::move(digests)});
      });
}

absl::Status Advertiser::AdvertiseStored(const BlobStore& store) {
  absl::StatusOr<std::vector<BlobInfo>> blobs = store.List();
  if (!blobs.ok()) return blobs.status();
  std::vector<std::string> digests;
  digests.reserve(blobs->size());
  for (const BlobInfo& blob : *blobs) digests.push_back(blob.digest);
  LOG(INFO) << "dht: advertising stored blobs count=" << digests.size();
  Advertise(std::move(digests));
  return absl::OkStatus();
}

void Advertiser::FindProviders(const std::string& digest,
                               absl::Duration deadline, Callback done) {
  VLOG(2) << "dht: finding providers digest=" << digest;
  dht_->FindProviders(
      dht::NodeId::ForKey(digest), deadline,
      [done = std::move(done)](absl::StatusOr<dht::FindProvidersResult> r) {
        if (!r.ok()) {
          done(r.status());
        } else {
          done(std::move(r->providers));
        }
      });
}

void Advertiser::OnCommitted(const std::string& digest) { Advertise({digest}); }

void Advertiser::OnDeleted(const std::string& digest) { Withdraw({digest}); }

void Advertiser::Enqueue(dht::Node& node, Op op) {
  if (op.kind == OpKind::kBootstrap) {
    // Joining comes before everything queued while waiting for it.
    if (started_) {
      LOG(WARNING) << "dht: ignoring second start";
      return;
    }
    started_ = true;
    queue_.push_front(std::move(op));
  } else if (op.digests.size() <= kMaxDigestsPerOp) {
    queue_.push_back(std::move(op));
  } else {
    // Ops run one at a time and each starts one lookup per digest, so
    // splitting a large batch (a full store at start) bounds the lookups
    // in flight, and the burst of datagrams, to kMaxDigestsPerOp.
    for (size_t i = 0; i < op.digests.size(); i += kMaxDigestsPerOp) {
      size_t end = std::min(op.digests.size(), i + kMaxDigestsPerOp);
      queue_.push_back(Op{op.kind,
                          {},
                          std::vector<std::string>(op.digests.begin() + i,
                                                   op.digests.begin() + end)});
    }
  }
  RunNext(node);
}

void Advertiser::RunNext(dht::Node& node) {
  if (busy_ || !started_ || queue_.empty()) return;
  Op op = std::move(queue_.front());
  queue_.pop_front();
  busy_ = true;
  if (op.kind == OpKind::kBootstrap) {
    RunBootstrap(node, op.seeds);
  } else {
    RunAnnounce(node, op);
  }
}

void Advertiser::RunBootstrap(dht::Node& node,
                              const std::vector<dht::Endpoint>& seeds) {
  if (seeds.empty()) {
    LOG(INFO) << "dht: started as first node endpoint="
              << endpoint().ToString();
    OpDone(node);
    return;
  }
  // TODO: after Start() a failed bootstrap is not retried; the node stays
  // alone (its records stored locally only) until another node contacts
  // it. StartResolving(), which shoald uses, bootstraps again at every
  // re-resolve while the routing table is empty.
  // The node runs its callbacks only while it lives, so `node` is valid in
  // them.
  node.Bootstrap(seeds, [this, &node, n = seeds.size()](absl::Status st) {
    if (st.ok()) {
      LOG(INFO) << "dht: joined seeds=" << n
                << " contacts=" << node.routing_table().size()
                << " endpoint=" << endpoint().ToString();
    } else {
      LOG(WARNING) << "dht: bootstrap failed seeds=" << n << " error=" << st;
    }
    OpDone(node);
  });
}

void Advertiser::RunAnnounce(dht::Node& node, const Op& op) {
  const bool provide = op.kind == OpKind::kProvide;
  const char* verb = provide ? "provide" : "withdraw";
  for (const std::string& digest : op.digests) {
    VLOG(1) << "dht: " << verb << " digest=" << digest;
  }
  auto done = [this, &node, verb, n = op.digests.size()](absl::Status st) {
    if (!st.ok()) {
      LOG(WARNING) << "dht: " << verb << " failed digests=" << n
                   << " error=" << st;
    } else {
      VLOG(1) << "dht: " << verb << " done digests=" << n;
    }
    OpDoneAfter(node, announce_spacing_ * static_cast<double>(n));
  };
  if (provide) {
    node.Provide(KeysOf(op.digests), std::move(done));
  } else {
    node.Withdraw(KeysOf(op.digests), std::move(done));
  }
}

void Advertiser::OpDoneAfter(dht::Node& node, absl::Duration gap) {
  if (gap <= absl::ZeroDuration()) {
    OpDone(node);
    return;
  }
  // The timer may fire while ~Advertiser is tearing the Dht down (dht_ is
  // already null then, the Dht object still alive): it goes through the
  // Dht's RunOnLoop, which drops the call once the node is gone.
  dht::Dht* dht = dht_.get();
  node.clock().Schedule(gap, [this, dht] {
    dht->RunOnLoop([this](dht::Node& n) { OpDone(n); });
  });
}

void Advertiser::OpDone(dht::Node& node) {
  busy_ = false;
  RunNext(node);
}

}  // namespace shoal::plugin
