// Fills ingests from peers: the "fill the ingest" hook of
// ../shared/docs/containerd-content-proxy.md (§6.2). When containerd starts
// writing a blob whose digest it named in the ref, the content service asks
// the Fetcher, while answering the stream's second STAT, to bring the blob in
// from other nodes: look up its providers in the DHT within the resolve
// timeout, stream it from one provider into the ingest (hashing as it lands),
// continue from the current offset with the next provider when one fails,
// and commit only when the digest matches. A blob that cannot be filled this
// way is left to containerd's own registry download, with the ingest back at
// offset 0 as the first STAT reported it (full fills only, see §6.2's
// "Caveat for partial fills").
//
// Thread-safe. Concurrent fills of one digest (two refs, two namespaces)
// share one download: later callers wait for the first and then find the
// blob committed.
#ifndef SHOAL_PLUGIN_FETCHER_H_
#define SHOAL_PLUGIN_FETCHER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "dht/endpoint.h"
#include "plugin/node_metrics.h"
#include "plugin/store.h"
#include "shoal/peer/v1/peer.grpc.pb.h"

namespace shoal::plugin {

// Who holds a blob. The Advertiser implements it over the DHT; unit tests
// use a fixed table.
class ProviderFinder {
 public:
  using Callback =
      std::function<void(absl::StatusOr<std::vector<dht::Endpoint>>)>;
  virtual ~ProviderFinder() = default;
  // Looks up the providers of `digest`; `done` runs exactly once, on any
  // thread, with the providers found (possibly none) or an error,
  // DEADLINE_EXCEEDED when `deadline` passed first.
  virtual void FindProviders(const std::string& digest, absl::Duration deadline,
                             Callback done) = 0;
};

struct FetcherOptions {
  // Longest a lookup may take before containerd is left to download the
  // blob itself. 20 ms, as the reference system's default: a DHT lookup on
  // a LAN takes about 1 ms per hop, and a miss must cost next to nothing.
  absl::Duration resolve_timeout = absl::Milliseconds(20);
  // Providers tried per blob (each continuing where the last stopped)
  // before giving up on peers.
  int max_attempts = 4;
  // Streams this node opens to one peer at once, at most what the peer
  // service allows per client (its --peer_max_streams_per_client, 4 by
  // default). containerd pulls every layer of an image at once; fills past
  // this wait for a stream to end.
  int max_streams_per_peer = 4;
  // How long a fill keeps retrying a peer that answers RESOURCE_EXHAUSTED
  // (its streams for our address are all taken, e.g. by other nodes behind
  // one NAT address) before trying the next provider.
  absl::Duration busy_wait_budget = absl::Seconds(10);
  // How long a peer is skipped after it sent bytes that failed
  // verification, and after it failed otherwise (refused, broke the stream,
  // timed out). Corruption is rare and serious; the others are often a
  // restarting node that will be back shortly.
  absl::Duration corrupt_shun = absl::Minutes(10);
  absl::Duration failure_shun = absl::Seconds(30);
  // A transfer from one peer that receives nothing for this long is
  // cancelled and the next provider continues: a peer that died without
  // closing its connection (power loss, partition) or whose disk hangs.
  // 10 s is many chunks' time at any sane upload cap; the check runs every
  // stall_timeout / 4.
  absl::Duration stall_timeout = absl::Seconds(10);
  // And it must finish within fetch_base_timeout plus the time its
  // remaining bytes take at min_bytes_per_second: a peer trickling bytes
  // just fast enough to dodge the stall check is dropped too.
  absl::Duration fetch_base_timeout = absl::Seconds(30);
  int64_t min_bytes_per_second = int64_t{1} << 20;
  // This node's own endpoint, never fetched from.
  absl::optional<dht::Endpoint> self;
  // Peers a channel is kept open to; past this the least recently used one
  // is closed. A node talks to at most the other nodes of its cluster.
  size_t max_cached_channels = 1024;
};

class Fetcher {
 public:
  // `store`, `finder` and `metrics` must outlive the Fetcher.
  Fetcher(BlobStore* store, ProviderFinder* finder, NodeMetrics* metrics,
          FetcherOptions options);
  ~Fetcher();
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  // Brings blob `digest` ("sha256:<hex>") of `size` (> 0) bytes into the
  // store from peers, receiving it into `writer`, an ingest the caller holds
  // at offset 0. On success the blob is committed (by this call, which
  // finishes `writer`, or by a concurrent call for the same digest, which
  // leaves `writer` untouched) and its info returned. On failure `writer` is
  // at offset 0 again and the error says why: NOT_FOUND when no peer has
  // the blob, UNAVAILABLE when every peer tried failed.
  absl::StatusOr<BlobInfo> Fill(const std::string& digest, int64_t size,
                                IngestWriter& writer);

  // True while `peer` is skipped because of an earlier failure.
  bool IsShunned(const dht::Endpoint& peer);

  // The peers a channel is kept open to now (tests, status pages).
  std::vector<dht::Endpoint> ChannelPeers();

  // Cancels the transfers running now and makes every later Fill fail at
  // once (UNAVAILABLE), so a daemon shutting down is not held up by a large
  // blob; the ingests involved go back to offset 0. Idempotent.
  void Shutdown();

 private:
  struct InFlight {
    absl::Notification done;
  };
  // A transfer from one peer, as the stall watchdog sees it.
  struct Call {
    grpc::ClientContext ctx;
    std::atomic<int64_t> received{0};
    // Watchdog's view, under mu_.
    int64_t seen = 0;
    absl::Time last_progress;
    bool stalled = false;
  };

  absl::StatusOr<BlobInfo> FillFromPeers(const std::string& digest,
                                         int64_t size, IngestWriter& writer);
  // One transfer from `peer` into `writer` from its current offset,
  // retried while the peer is busy (RESOURCE_EXHAUSTED) within
  // busy_wait_budget. A stall comes back as DEADLINE_EXCEEDED. Sets
  // `*stopping` when the Fetcher is shutting down.
  absl::StatusOr<int64_t> FetchFrom(const dht::Endpoint& peer,
                                    const std::string& digest, int64_t size,
                                    IngestWriter& writer, bool* stopping);
  absl::StatusOr<std::vector<dht::Endpoint>> Lookup(const std::string& digest);
  // The providers worth trying: not ourselves, not shunned, in random order
  // so that load spreads over the nodes holding a popular blob.
  std::vector<dht::Endpoint> Candidates(std::vector<dht::Endpoint> found);
  // The next provider to try: among those not `tried` and not shunned, the
  // one this node has the fewest streams open to (so the layers of one image
  // come from several holders at once), the first in `candidates`' random
  // order on a tie. Empty when none is left.
  absl::optional<size_t> PickPeer(const std::vector<dht::Endpoint>& candidates,
                                  const std::vector<bool>& tried);
  void Shun(const dht::Endpoint& peer, absl::Duration how_long);
  // Takes one of `peer`'s stream slots for `call`, waiting for one to free
  // up, and shows the call to the watchdog; false when shutting down.
  bool AcquireStream(const dht::Endpoint& peer, Call* call);
  // Gives the slot back; returns whether the Fetcher is shutting down.
  bool ReleaseStream(const dht::Endpoint& peer, Call* call);
  // The watchdog thread: cancels calls without progress for stall_timeout.
  void WatchStalls();
  std::shared_ptr<::shoal::peer::v1::Peer::Stub> StubFor(
      const dht::Endpoint& peer);

  BlobStore& store_;
  ProviderFinder& finder_;
  NodeMetrics& metrics_;
  const FetcherOptions options_;

  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Calls to peers running now, for Shutdown() and the watchdog.
  absl::flat_hash_set<Call*> calls_ ABSL_GUARDED_BY(mu_);
  // Streams open to each peer, and the signal that one ended.
  absl::flat_hash_map<dht::Endpoint, int> streams_ ABSL_GUARDED_BY(mu_);
  absl::CondVar streams_cv_;
  absl::flat_hash_map<std::string, std::shared_ptr<InFlight>> in_flight_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<dht::Endpoint, absl::Time> shunned_until_
      ABSL_GUARDED_BY(mu_);
  // One channel per peer, reused across fills (a new HTTP/2 connection
  // costs a handshake per blob otherwise), with when it was last used for
  // the eviction order. Stubs are thread-safe.
  struct CachedStub {
    std::shared_ptr<::shoal::peer::v1::Peer::Stub> stub;
    uint64_t last_used;
  };
  absl::flat_hash_map<dht::Endpoint, CachedStub> stubs_ ABSL_GUARDED_BY(mu_);
  uint64_t stub_uses_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread watchdog_;  // Last: starts after the members it uses.
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_FETCHER_H_
