#include "plugin/fetcher.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "plugin/peer_client.h"

namespace shoal::plugin {
namespace {

FetchFailure Classify(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
      return FetchFailure::kUnavailable;
    case absl::StatusCode::kNotFound:
      return FetchFailure::kNotFound;
    case absl::StatusCode::kDeadlineExceeded:
      return FetchFailure::kTimeout;
    case absl::StatusCode::kDataLoss:
      return FetchFailure::kProtocol;
    case absl::StatusCode::kResourceExhausted:
      return FetchFailure::kBusy;
    default:
      return FetchFailure::kOther;
  }
}

// Waits between retries of a busy peer: short at first, since a stream
// slot frees up as soon as any transfer from that peer ends.
constexpr absl::Duration kBusyBackoffStart = absl::Milliseconds(20);
constexpr absl::Duration kBusyBackoffMax = absl::Milliseconds(500);

}  // namespace

Fetcher::Fetcher(BlobStore* store, ProviderFinder* finder, NodeMetrics* metrics,
                 FetcherOptions options)
    : store_(*store),
      finder_(*finder),
      metrics_(*metrics),
      options_(std::move(options)),
      watchdog_([this] { WatchStalls(); }) {}

Fetcher::~Fetcher() {
  Shutdown();
  watchdog_.join();
}

void Fetcher::WatchStalls() {
  absl::MutexLock lock(&mu_);
  while (!shut_down_) {
    // Wakes early only for Shutdown(), which signals streams_cv_.
    streams_cv_.WaitWithTimeout(&mu_, options_.stall_timeout / 4);
    const absl::Time now = absl::Now();
    for (Call* call : calls_) {
      int64_t received = call->received.load(std::memory_order_relaxed);
      if (received != call->seen) {
        call->seen = received;
        call->last_progress = now;
      } else if (!call->stalled &&
                 now - call->last_progress >= options_.stall_timeout) {
        call->stalled = true;
        call->ctx.TryCancel();
      }
    }
  }
}

void Fetcher::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  shut_down_ = true;
  streams_cv_.SignalAll();
  for (Call* call : calls_) call->ctx.TryCancel();
  LOG(INFO) << "fetcher: shut down, cancelled transfers=" << calls_.size();
}

absl::StatusOr<BlobInfo> Fetcher::Fill(const std::string& digest, int64_t size,
                                       IngestWriter& writer) {
  std::shared_ptr<InFlight> leader_of;
  std::shared_ptr<InFlight> waiting_for;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::UnavailableError("fetcher is shut down");
    auto [it, inserted] = in_flight_.try_emplace(digest);
    if (inserted) {
      it->second = std::make_shared<InFlight>();
      leader_of = it->second;
    } else {
      waiting_for = it->second;
    }
  }
  if (waiting_for != nullptr) {
    // Another stream is fetching the same blob (another namespace, or
    // another ref for one digest): wait for it instead of downloading twice.
    // It is bounded by the lookup and fetch deadlines.
    metrics_.fetch_dedups().Add();
    VLOG(1) << "fetcher: waiting for the fetch in flight digest=" << digest;
    waiting_for->done.WaitForNotification();
    absl::StatusOr<BlobInfo> info = store_.Info(digest);
    if (info.ok() && info->size == size) return info;
    return absl::NotFoundError(
        absl::StrCat("the concurrent fetch of ", digest, " did not succeed"));
  }

  absl::StatusOr<BlobInfo> result = FillFromPeers(digest, size, writer);
  {
    absl::MutexLock lock(&mu_);
    in_flight_.erase(digest);
  }
  leader_of->done.Notify();
  return result;
}

absl::StatusOr<BlobInfo> Fetcher::FillFromPeers(const std::string& digest,
                                                int64_t size,
                                                IngestWriter& writer) {
  absl::StatusOr<std::vector<dht::Endpoint>> found = Lookup(digest);
  if (!found.ok()) return found.status();
  std::vector<dht::Endpoint> candidates = Candidates(*std::move(found));
  if (candidates.empty()) {
    return absl::NotFoundError(absl::StrCat("no usable provider of ", digest));
  }

  const absl::Time start = absl::Now();
  // Peers whose bytes are in the ingest now; all of them are suspects if
  // the digest does not match, since the hash covers the whole blob.
  std::vector<dht::Endpoint> contributors;
  std::vector<std::string> errors;
  std::vector<bool> tried(candidates.size(), false);
  int attempts = 0;
  while (attempts < options_.max_attempts) {
    absl::optional<size_t> pick = PickPeer(candidates, tried);
    if (!pick.has_value()) break;
    tried[*pick] = true;
    const dht::Endpoint& peer = candidates[*pick];
    ++attempts;
    const int64_t before = writer.offset();
    bool stopping = false;
    absl::StatusOr<int64_t> got =
        FetchFrom(peer, digest, size, writer, &stopping);
    const int64_t received = writer.offset() - before;
    metrics_.peer_received_bytes().Add(static_cast<double>(received));
    if (stopping && !got.ok()) {
      errors.push_back("shutting down");
      break;
    }
    if (received > 0 && std::find(contributors.begin(), contributors.end(),
                                  peer) == contributors.end()) {
      contributors.push_back(peer);
    }
    if (!got.ok()) {
      FetchFailure reason = Classify(got.status());
      metrics_.RecordFetchFailure(reason);
      // A stale record or a peer still busy after the wait budget is no
      // reason to avoid the peer for other blobs.
      if (reason != FetchFailure::kNotFound && reason != FetchFailure::kBusy) {
        Shun(peer, options_.failure_shun);
      }
      errors.push_back(
          absl::StrCat(peer.ToString(), ": ", got.status().ToString()));
      VLOG(1) << "fetcher: peer failed digest=" << digest
              << " peer=" << peer.ToString() << " offset=" << writer.offset()
              << " error=" << got.status();
      continue;
    }
    absl::StatusOr<BlobInfo> info = writer.Commit(size, digest);
    if (info.ok()) {
      metrics_.pulls_from_peer().Add();
      std::vector<std::string> from;
      for (const dht::Endpoint& c : contributors) from.push_back(c.ToString());
      LOG(INFO) << "fetcher: filled digest=" << digest << " bytes=" << size
                << " from=" << absl::StrJoin(from, ",")
                << " seconds=" << absl::ToDoubleSeconds(absl::Now() - start);
      return info;
    }
    if (!absl::IsFailedPrecondition(info.status())) {
      // Not the peers' fault (a local disk error): stop trying.
      LOG(WARNING) << "fetcher: cannot commit fetched blob digest=" << digest
                   << " error=" << info.status();
      errors.push_back(info.status().ToString());
      break;
    }
    // The bytes do not hash to the digest: drop them all and shun everyone
    // who sent some, then try the providers left from the start.
    for (const dht::Endpoint& c : contributors) {
      metrics_.RecordFetchFailure(FetchFailure::kCorrupt);
      Shun(c, options_.corrupt_shun);
      LOG_EVERY_T(WARNING, 10)
          << "fetcher: peer sent corrupt data, shunned for "
          << absl::FormatDuration(options_.corrupt_shun)
          << " peer=" << c.ToString() << " digest=" << digest
          << " (rate limited)";
    }
    errors.push_back(
        absl::StrCat("corrupt data from ", contributors.size(), " peer(s)"));
    contributors.clear();
    absl::Status reset = writer.Truncate();
    if (!reset.ok()) return reset;
  }

  absl::Status reset = writer.Truncate();
  if (!reset.ok()) return reset;
  VLOG(1) << "fetcher: falling back to upstream digest=" << digest
          << " errors=[" << absl::StrJoin(errors, "; ") << "]";
  LOG_EVERY_T(WARNING, 5) << "fetcher: falling back to upstream digest="
                          << digest << " tried=" << attempts << " last_error="
                          << (errors.empty() ? "none" : errors.back())
                          << " (rate limited)";
  return absl::UnavailableError(absl::StrCat(
      "no peer could serve ", digest, ": ", absl::StrJoin(errors, "; ")));
}

absl::StatusOr<int64_t> Fetcher::FetchFrom(const dht::Endpoint& peer,
                                           const std::string& digest,
                                           int64_t size, IngestWriter& writer,
                                           bool* stopping) {
  absl::Duration busy_waited;
  absl::Duration backoff = kBusyBackoffStart;
  while (true) {
    absl::Duration timeout =
        options_.fetch_base_timeout +
        absl::Seconds(static_cast<double>(size - writer.offset()) /
                      static_cast<double>(options_.min_bytes_per_second));
    Call call;
    if (!AcquireStream(peer, &call)) {
      *stopping = true;
      return absl::UnavailableError("shutting down");
    }
    absl::StatusOr<int64_t> got =
        FetchBlobInto(*StubFor(peer), digest, size, writer, timeout, &call.ctx,
                      &call.received);
    *stopping = ReleaseStream(peer, &call);
    if (call.stalled && !got.ok()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no data for ", absl::FormatDuration(options_.stall_timeout)));
    }
    if (!absl::IsResourceExhausted(got.status()) || *stopping ||
        busy_waited >= options_.busy_wait_budget) {
      return got;
    }
    // The peer serves as many streams to this address as it allows (other
    // clients behind the same address). Not a fault: wait a little and ask
    // again.
    metrics_.RecordFetchFailure(FetchFailure::kBusy);
    VLOG(1) << "fetcher: peer busy digest=" << digest
            << " peer=" << peer.ToString()
            << " retry_in=" << absl::FormatDuration(backoff);
    absl::SleepFor(backoff);
    busy_waited += backoff;
    backoff = std::min(backoff * 2, kBusyBackoffMax);
  }
}

absl::StatusOr<std::vector<dht::Endpoint>> Fetcher::Lookup(
    const std::string& digest) {
  struct Answer {
    absl::Notification done;
    absl::StatusOr<std::vector<dht::Endpoint>> providers;
  };
  // Shared with the callback, which may come after we stopped waiting.
  auto answer = std::make_shared<Answer>();
  const absl::Time start = absl::Now();
  finder_.FindProviders(
      digest, options_.resolve_timeout,
      [answer](absl::StatusOr<std::vector<dht::Endpoint>> providers) {
        answer->providers = std::move(providers);
        answer->done.Notify();
      });
  // The finder answers by the deadline; the margin only guards against a
  // finder that drops the callback while shutting down.
  bool answered = answer->done.WaitForNotificationWithTimeout(
      options_.resolve_timeout + absl::Seconds(1));
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!answered) {
    metrics_.RecordLookup(LookupOutcome::kError, seconds);
    return absl::UnavailableError("provider lookup never answered");
  }
  const absl::StatusOr<std::vector<dht::Endpoint>>& providers =
      answer->providers;
  if (absl::IsDeadlineExceeded(providers.status())) {
    metrics_.RecordLookup(LookupOutcome::kTimeout, seconds);
    VLOG(1) << "fetcher: lookup timed out digest=" << digest;
    return providers.status();
  }
  if (!providers.ok()) {
    metrics_.RecordLookup(LookupOutcome::kError, seconds);
    LOG_EVERY_T(WARNING, 10)
        << "fetcher: lookup failed digest=" << digest
        << " error=" << providers.status() << " (rate limited)";
    return providers.status();
  }
  metrics_.RecordLookup(
      providers->empty() ? LookupOutcome::kNotFound : LookupOutcome::kFound,
      seconds);
  VLOG(1) << "fetcher: lookup digest=" << digest
          << " providers=" << providers->size() << " seconds=" << seconds;
  return providers;
}

std::vector<dht::Endpoint> Fetcher::Candidates(
    std::vector<dht::Endpoint> found) {
  std::vector<dht::Endpoint> out;
  for (dht::Endpoint& e : found) {
    if (options_.self.has_value() && e == *options_.self) continue;
    if (std::find(out.begin(), out.end(), e) != out.end()) continue;
    if (IsShunned(e)) continue;
    out.push_back(std::move(e));
  }
  thread_local std::mt19937 rng{std::random_device{}()};
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

absl::optional<size_t> Fetcher::PickPeer(
    const std::vector<dht::Endpoint>& candidates,
    const std::vector<bool>& tried) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  absl::optional<size_t> best;
  int best_load = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (tried[i]) continue;
    auto shun = shunned_until_.find(candidates[i]);
    if (shun != shunned_until_.end() && now < shun->second) continue;
    auto it = streams_.find(candidates[i]);
    int load = it == streams_.end() ? 0 : it->second;
    if (!best.has_value() || load < best_load) {
      best = i;
      best_load = load;
    }
  }
  return best;
}

bool Fetcher::AcquireStream(const dht::Endpoint& peer, Call* call) {
  absl::MutexLock lock(&mu_);
  while (!shut_down_ && streams_[peer] >= options_.max_streams_per_peer) {
    streams_cv_.Wait(&mu_);
  }
  if (shut_down_) return false;
  ++streams_[peer];
  call->last_progress = absl::Now();
  calls_.insert(call);
  return true;
}

bool Fetcher::ReleaseStream(const dht::Endpoint& peer, Call* call) {
  absl::MutexLock lock(&mu_);
  calls_.erase(call);
  auto it = streams_.find(peer);
  if (--it->second == 0) streams_.erase(it);
  streams_cv_.SignalAll();
  return shut_down_;
}

bool Fetcher::IsShunned(const dht::Endpoint& peer) {
  absl::MutexLock lock(&mu_);
  auto it = shunned_until_.find(peer);
  if (it == shunned_until_.end()) return false;
  if (absl::Now() < it->second) return true;
  shunned_until_.erase(it);
  return false;
}

void Fetcher::Shun(const dht::Endpoint& peer, absl::Duration how_long) {
  absl::MutexLock lock(&mu_);
  absl::Time& until = shunned_until_[peer];
  until = std::max(until, absl::Now() + how_long);
}

std::shared_ptr<::shoal::peer::v1::Peer::Stub> Fetcher::StubFor(
    const dht::Endpoint& peer) {
  absl::MutexLock lock(&mu_);
  auto it = stubs_.find(peer);
  if (it != stubs_.end()) {
    it->second.last_used = ++stub_uses_;
    return it->second.stub;
  }
  if (!stubs_.empty() && stubs_.size() >= options_.max_cached_channels) {
    // A scan, but only when the cache is full, and it holds at most one
    // entry per node of the cluster. A fill still using the stub keeps it
    // alive until it ends.
    auto oldest = stubs_.begin();
    for (auto e = stubs_.begin(); e != stubs_.end(); ++e) {
      if (e->second.last_used < oldest->second.last_used) oldest = e;
    }
    VLOG(1) << "fetcher: closing the least recently used channel peer="
            << oldest->first.ToString();
    stubs_.erase(oldest);
  }
  grpc::ChannelArguments args;
  // A dedicated connection per peer: fills from different peers must not
  // share one TCP connection's window.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<::shoal::peer::v1::Peer::Stub> stub =
      ::shoal::peer::v1::Peer::NewStub(grpc::CreateCustomChannel(
          peer.ToString(), grpc::InsecureChannelCredentials(), args));
  stubs_.emplace(peer, CachedStub{stub, ++stub_uses_});
  return stub;
}

std::vector<dht::Endpoint> Fetcher::ChannelPeers() {
  absl::MutexLock lock(&mu_);
  std::vector<dht::Endpoint> peers;
  peers.reserve(stubs_.size());
  for (const auto& [peer, cached] : stubs_) peers.push_back(peer);
  return peers;
}

}  // namespace shoal::plugin
