#include "plugin/advertiser.h"

#include <glog/logging.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "dht/node_id.h"

namespace shoal::plugin {
namespace {

// Runs `fn` on `loop`'s thread and waits for it. Not from the loop thread.
void RunOnLoop(dht::EventLoop& loop, std::function<void()> fn) {
  DCHECK(!loop.InLoopThread());
  absl::Notification done;
  loop.Post([&] {
    fn();
    done.Notify();
  });
  done.WaitForNotification();
}

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
    const std::string& ip, uint16_t port, dht::NodeOptions options) {
  absl::StatusOr<std::unique_ptr<dht::EventLoop>> loop =
      dht::EventLoop::Create();
  if (!loop.ok()) return loop.status();
  std::unique_ptr<Advertiser> a(new Advertiser(*std::move(loop)));
  a->loop_->Start();

  // The transport, the node and gen_ live on the loop thread from the start.
  absl::Status status;
  Advertiser* self = a.get();
  RunOnLoop(*a->loop_, [&] {
    absl::StatusOr<std::unique_ptr<dht::UdpTransport>> transport =
        dht::UdpTransport::Create(self->loop_.get(), ip, port);
    if (!transport.ok()) {
      status = transport.status();
      return;
    }
    self->transport_ = *std::move(transport);
    self->endpoint_ = self->transport_->local_endpoint();
    self->node_ = std::make_unique<dht::Node>(dht::NodeId::Random(self->gen_),
                                              *self->transport_, *self->loop_,
                                              self->gen_, options);
  });
  if (!status.ok()) return status;  // ~Advertiser stops the loop.
  return a;
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
  // The node's timers and the transport's read watch belong to the loop
  // thread; see udp_transport.h.
  RunOnLoop(*loop_, [this] {
    node_.reset();
    transport_.reset();
    queue_.clear();
  });
  loop_->Stop();
}

void Advertiser::Start(std::vector<dht::Endpoint> seeds) {
  loop_->Post([this, seeds = std::move(seeds)]() mutable {
    Enqueue(Op{OpKind::kBootstrap, std::move(seeds), {}});
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
    loop_->Post([this, seeds = std::move(seeds)]() mutable {
      OnSeedsResolved(std::move(seeds));
    });

    absl::MutexLock lock(&stop_mu_);
    if (stop_mu_.AwaitWithTimeout(absl::Condition(&stop_resolving_),
                                  interval)) {
      return;
    }
  }
}

void Advertiser::OnSeedsResolved(std::vector<dht::Endpoint> seeds) {
  if (node_ == nullptr) return;
  std::vector<dht::Endpoint> others;
  bool fresh = false;
  for (const dht::Endpoint& seed : seeds) {
    if (seed == endpoint_) continue;  // A headless Service lists us too.
    others.push_back(seed);
    fresh |= known_seeds_.insert(seed).second;
  }
  if (!started_) {
    Enqueue(Op{OpKind::kBootstrap, std::move(others), {}});
    return;
  }
  // TODO: a routing table that is not empty but holds only dead contacts
  // does not trigger a new bootstrap; the node waits for new seed addresses
  // or for its contacts to time out.
  if (others.empty() || (!fresh && node_->routing_table().size() > 0)) return;
  VLOG(1) << "dht: bootstrapping again seeds=" << others.size()
          << " fresh=" << fresh;
  // Ahead of queued provides, like the first join.
  queue_.push_front(Op{OpKind::kBootstrap, std::move(others), {}});
  RunNext();
}

void Advertiser::Advertise(std::vector<std::string> digests) {
  if (digests.empty()) return;
  loop_->Post([this, digests = std::move(digests)]() mutable {
    Enqueue(Op{OpKind::kProvide, {}, std::move(digests)});
  });
}

void Advertiser::Withdraw(std::vector<std::string> digests) {
  if (digests.empty()) return;
  loop_->Post([this, digests = std::move(digests)]() mutable {
    Enqueue(Op{OpKind::kWithdraw, {}, std::move(digests)});
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
                               FindProvidersCallback done) {
  loop_->Post([this, digest, done = std::move(done)]() mutable {
    if (node_ == nullptr) return;
    VLOG(1) << "dht: finding providers digest=" << digest;
    node_->FindProviders(dht::NodeId::ForKey(digest),
                         [done = std::move(done)](dht::FindProvidersResult r) {
                           done(std::move(r.providers));
                         });
  });
}

void Advertiser::OnCommitted(const std::string& digest) { Advertise({digest}); }

void Advertiser::OnDeleted(const std::string& digest) { Withdraw({digest}); }

void Advertiser::Enqueue(Op op) {
  if (op.kind == OpKind::kBootstrap) {
    // Joining comes before everything queued while waiting for it.
    if (started_) {
      LOG(WARNING) << "dht: ignoring second start";
      return;
    }
    started_ = true;
    queue_.push_front(std::move(op));
  } else {
    queue_.push_back(std::move(op));
  }
  RunNext();
}

void Advertiser::RunNext() {
  if (busy_ || !started_ || queue_.empty() || node_ == nullptr) return;
  Op op = std::move(queue_.front());
  queue_.pop_front();
  busy_ = true;
  if (op.kind == OpKind::kBootstrap) {
    RunBootstrap(op.seeds);
  } else {
    RunAnnounce(op);
  }
}

void Advertiser::RunBootstrap(const std::vector<dht::Endpoint>& seeds) {
  if (seeds.empty()) {
    LOG(INFO) << "dht: started as first node endpoint=" << endpoint_.ToString();
    OpDone();
    return;
  }
  // TODO: a failed bootstrap is not retried; the node stays alone (its
  // records are stored locally only) until another node contacts it.
  node_->Bootstrap(seeds, [this, n = seeds.size()](absl::Status st) {
    if (st.ok()) {
      LOG(INFO) << "dht: joined seeds=" << n
                << " contacts=" << node_->routing_table().size()
                << " endpoint=" << endpoint_.ToString();
    } else {
      LOG(WARNING) << "dht: bootstrap failed seeds=" << n << " error=" << st;
    }
    OpDone();
  });
}

void Advertiser::RunAnnounce(const Op& op) {
  const bool provide = op.kind == OpKind::kProvide;
  const char* verb = provide ? "provide" : "withdraw";
  for (const std::string& digest : op.digests) {
    VLOG(1) << "dht: " << verb << " digest=" << digest;
  }
  // TODO: a batch of thousands of digests (a large store at start) starts
  // one lookup per digest at once; splitting it into smaller batches would
  // bound the burst of datagrams.
  auto done = [this, verb, n = op.digests.size()](absl::Status st) {
    if (!st.ok()) {
      LOG(WARNING) << "dht: " << verb << " failed digests=" << n
                   << " error=" << st;
    } else {
      VLOG(1) << "dht: " << verb << " done digests=" << n;
    }
    OpDone();
  };
  if (provide) {
    node_->Provide(KeysOf(op.digests), std::move(done));
  } else {
    node_->Withdraw(KeysOf(op.digests), std::move(done));
  }
}

void Advertiser::OpDone() {
  busy_ = false;
  RunNext();
}

}  // namespace shoal::plugin
