// Advertises the blobs this node holds in the DHT: owns a dht::Dht (its
// event loop, UDP transport and node) and turns digests into provider
// records (key = NodeId::ForKey(digest), provider = the node's DHT
// endpoint). Thread-safe: every public method posts its work to the DHT's
// loop thread (Dht::RunOnLoop), where its own state lives without locks.
// Bootstrap, Provide and Withdraw run one at a time in the order they were
// asked for, so a Withdraw never overtakes the Provide of the same digest and
// nothing is provided before the node joined. The dht::Node re-provides every
// advertised digest each NodeOptions::republish_interval until it is withdrawn,
// so records do not lapse while the blob is held.
#ifndef SHOAL_PLUGIN_ADVERTISER_H_
#define SHOAL_PLUGIN_ADVERTISER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dht/dht.h"
#include "dht/dns_resolver.h"
#include "dht/endpoint.h"
#include "dht/node.h"
#include "plugin/blob_events.h"
#include "plugin/fetcher.h"
#include "plugin/store.h"

namespace shoal::plugin {

class Advertiser : public BlobEvents, public ProviderFinder {
 public:
  // Starts the event loop and binds the DHT's UDP socket to `ip` (IPv4 or
  // IPv6 literal, not unspecified: it is the address peers are told to fetch
  // from) and `port` (0 picks a free one). INVALID_ARGUMENT for a bad
  // address, UNAVAILABLE when the socket cannot be bound.
  // `announce_spacing` is the pause after each provide or withdraw op, per
  // digest it held, before the next op starts (see kAnnounceSpacing).
  static absl::StatusOr<std::unique_ptr<Advertiser>> Create(
      const std::string& ip, uint16_t port, dht::NodeOptions options = {},
      absl::Duration announce_spacing = kAnnounceSpacing);

  // 15 ms per digest: in a small cluster one lookup sends each other node
  // about one request, so ops paced this way stay near 67 requests per
  // second per peer, under the 100 a peer admits from one address
  // (dht/rate_limiter.h). Advertising 10,000 stored blobs at start then
  // takes 2.5 minutes instead of tripping every peer's limit; a commit's
  // single provide is delayed by nothing worth noticing.
  static constexpr absl::Duration kAnnounceSpacing = absl::Milliseconds(15);

  // Tears the node and socket down on the loop thread, then stops the loop.
  // Work not yet done (queued provides, pending lookups) is dropped.
  ~Advertiser() override;
  Advertiser(const Advertiser&) = delete;
  Advertiser& operator=(const Advertiser&) = delete;

  // Joins the DHT through `seeds` (empty: the first node of a network, which
  // others join). Call once, before or after Advertise(); provides wait for
  // it. Logs the outcome (INFO when joined, WARNING when no seed answered).
  void Start(std::vector<dht::Endpoint> seeds);

  // Like Start(), but each seed may be "IP:port", "[IPv6]:port" or
  // "name:port". Names are resolved with a DnsResolver built from `dns` on a
  // resolver thread this Advertiser owns (never the loop's), at once and
  // then every `reresolve_interval`; the node joins through the endpoints
  // found (our own left out: a headless Service lists every node), and
  // bootstraps again whenever its routing table is empty or a new seed
  // address appears, so an isolated or restarted node rejoins by itself.
  // If nothing resolves at first the node starts alone. Call once, instead
  // of Start(). INVALID_ARGUMENT for a malformed seed or a non-positive
  // interval; the resolver's errors from creating the c-ares channel.
  absl::Status StartResolving(std::vector<std::string> seeds,
                              dht::DnsResolverOptions dns,
                              absl::Duration reresolve_interval);

  // Provides every digest in `digests` ("sha256:<hex>") in one batch.
  // Failures are logged at WARNING, not retried.
  void Advertise(std::vector<std::string> digests);
  // Withdraws the provider records of `digests`, in one batch.
  void Withdraw(std::vector<std::string> digests);
  // Advertises every blob `store` holds now. Errors from listing the store
  // are returned; the provide itself is asynchronous, as for Advertise().
  absl::Status AdvertiseStored(const BlobStore& store);

  // ProviderFinder: `done` runs once on the loop thread with the providers
  // found (possibly none) or DEADLINE_EXCEEDED, unless the Advertiser is
  // destroyed first. `done` must not wait for the loop.
  void FindProviders(const std::string& digest, absl::Duration deadline,
                     Callback done) override;

  // The DHT, for tests and status pages (its RunOnLoop reaches the node).
  dht::Dht& dht() { return *dht_; }

  // The bound UDP endpoint, which is also the endpoint advertised.
  const dht::Endpoint& endpoint() const { return dht_->endpoint(); }

  // BlobEvents: each event is advertised (or withdrawn) on its own.
  // TODO: one Provide per commit means one lookup per blob; a pull of many
  // layers could be batched over a short window instead.
  void OnCommitted(const std::string& digest) override;
  void OnDeleted(const std::string& digest) override;

 private:
  enum class OpKind { kBootstrap, kProvide, kWithdraw };
  struct Op {
    OpKind kind;
    std::vector<dht::Endpoint> seeds;  // kBootstrap only.
    std::vector<std::string> digests;  // kProvide and kWithdraw.
  };

  Advertiser(std::unique_ptr<dht::Dht> dht, absl::Duration announce_spacing)
      : dht_(std::move(dht)), announce_spacing_(announce_spacing) {}

  // Loop thread only, with the node Dht::RunOnLoop passes (or a node
  // callback captured).
  void Enqueue(dht::Node& node, Op op);
  void RunNext(dht::Node& node);
  void RunBootstrap(dht::Node& node, const std::vector<dht::Endpoint>& seeds);
  void RunAnnounce(dht::Node& node, const Op& op);
  void OpDone(dht::Node& node);
  // OpDone after `gap`, on a timer of the loop.
  void OpDoneAfter(dht::Node& node, absl::Duration gap);
  // Seeds from the resolver thread: starts, or bootstraps again if needed.
  void OnSeedsResolved(dht::Node& node, std::vector<dht::Endpoint> seeds);

  // Resolver thread: resolves `names` with `literal` added, posts the result
  // to the loop, sleeps `interval`, until stop_resolving_.
  void ResolveLoop(std::unique_ptr<dht::DnsResolver> resolver,
                   std::vector<std::pair<std::string, uint16_t>> names,
                   std::vector<dht::Endpoint> literal, absl::Duration interval);

  // Set at construction; destroyed first by ~Advertiser, which drops the
  // callbacks still pending on the loop.
  std::unique_ptr<dht::Dht> dht_;
  const absl::Duration announce_spacing_;

  // Loop thread only while dht_ lives.
  // Operations waiting for the one in flight (busy_) to finish. Provides
  // wait until Start() has been asked for and its bootstrap has finished.
  std::deque<Op> queue_;
  bool started_ = false;
  bool busy_ = false;
  // Seed endpoints resolved so far, to spot new ones.
  absl::flat_hash_set<dht::Endpoint> known_seeds_;

  // The resolver thread, if StartResolving() started one; joined by the
  // destructor before the node goes.
  std::thread resolver_thread_;
  absl::Mutex stop_mu_;
  bool stop_resolving_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_ADVERTISER_H_
