// One DHT node: answers PING, FIND_NODE, GET_PROVIDERS, ADD_PROVIDER and
// WITHDRAW_PROVIDER from its routing table and provider store, learns
// contacts from every valid message, and runs iterative lookups for
// bootstrap, FindProviders, Provide and Withdraw. Runs entirely on the
// event-loop thread that drives its Transport and Clock: not thread-safe,
// takes no locks, and every public method must be called on that thread.
#ifndef SHOAL_DHT_NODE_H_
#define SHOAL_DHT_NODE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "dht/codec.h"
#include "dht/endpoint.h"
#include "dht/lookup.h"
#include "dht/node_id.h"
#include "dht/provider_store.h"
#include "dht/routing_table.h"
#include "dht/rpc.h"
#include "dht/transport.h"

namespace shoal::dht {

struct NodeOptions {
  RoutingTableOptions routing;
  ProviderStoreOptions store;
  RpcOptions rpc;
  // Parallelism alpha of every lookup (paper, 2.3).
  size_t alpha = 3;
  // Soft timeout of lookup requests: after this long without a reply a
  // request stops holding one of the alpha slots and the lookup queries the
  // next contact (in effect a hedge), while the request itself waits for
  // the full RPC timeout (300 ms) and a reply in between still counts. It is
  // soft_timeout_rtt_factor times the smoothed round trip of lookup replies,
  // kept within [soft_timeout_floor, soft_timeout]:
  // - 10 round trips: a live peer's reply is late by that much only when
  //   the peer or its host stalls, so almost every soft timeout is a lost
  //   datagram or a dead peer, and each costs ~10 round trips, not 300 ms.
  // - floor 5 ms: 10 LAN round trips of 0.5 ms; below that, scheduling
  //   jitter on a loaded host (a few ms) would mark live peers slow and send
  //   needless extra requests.
  // - soft_timeout, 50 ms, is the cap and the value before the first
  //   sample: it keeps the old behaviour on slow links (WAN) and before any
  //   round trip is known.
  absl::Duration soft_timeout = absl::Milliseconds(50);
  absl::Duration soft_timeout_floor = absl::Milliseconds(5);
  double soft_timeout_rtt_factor = 10;
  // FindProviders stops once this many providers are known (0: run to
  // convergence). 1: a node about to pull a blob needs one live source now,
  // not the converged set; the holders it reached return up to 20 providers
  // each, so the result usually lists several, and a fetcher that finds
  // them all dead can look up again. Waiting for more would cost the round
  // trips the latency goal (p50 <= 2 ms) does not have.
  size_t enough_providers = 1;
  // Lifetime asked for in ADD_PROVIDER. 24 hours is half the wire limit
  // (kMaxProviderTtl), so a node may be given twice as long, and a day is
  // short enough that records of a node that vanished without its holders
  // noticing (provider checks off, a partition) do not linger for long.
  absl::Duration provider_ttl = absl::Hours(24);
  // How often the keys this node provides are announced again (Provide
  // adds keys to the set, Withdraw removes them), so their records never
  // lapse while the node holds the blobs. Each round re-provides the keys
  // provided when it started, in batches spread evenly over the interval, so
  // a key is re-announced at most 2 * republish_interval after it was last
  // announced (it may have just missed a round). 6 hours, a quarter of the
  // TTL: that worst case is 12 h, and a key whose batch failed (lost
  // datagrams, a partition) still gets the next round at 18 h, before its
  // records expire at 24 h. It also refreshes the set of k closest nodes
  // under churn. Must be shorter than provider_ttl; zero disables it.
  absl::Duration republish_interval = absl::Hours(6);
  // Keys per republish batch; one batch is in flight at a time. 32 is one
  // ADD_PROVIDER's worth, and bounds a republish to 32 lookups (<= 96
  // requests with alpha 3) in flight: 10,000 keys take 313 batches, one
  // every ~69 s with the 6-hour interval, far under peers' rate limits.
  size_t republish_batch_keys = 32;
  // Provider checks: a node that holds records of another provider PINGs
  // that provider once it has not heard from it (any request or reply) for
  // this long, and after provider_check_attempts unanswered PINGs in a row
  // removes every record of it, so fetchers are not sent to dead nodes.
  // 10 s plus a 1 s tick and three 300 ms timeouts removes a dead
  // provider's records within ~12 s, inside the 30 s goal, while a live
  // provider costs each of its record holders one PING per 10 s at most.
  // Zero disables the checks.
  absl::Duration provider_check_interval = absl::Seconds(10);
  // How often due providers are looked for. 1 s: finer would add timers,
  // not speed (the interval dominates).
  absl::Duration provider_check_tick = absl::Seconds(1);
  // PINGs started per tick, at most. Bounds the traffic at 50 PINGs/s per
  // node (100 datagrams with the PONGs, ~5 KB/s) however many providers a
  // node holds records of; up to 50 * (30 - 2) = 1,400 distinct providers
  // each is still checked within the 30 s goal.
  // TODO: the checks cost each holder one PING per distinct provider per
  // 10 s, so with every node providing something the cost grows with N:
  // above ~500 nodes the cap binds, and above ~1,400 distinct providers per
  // holder a dead provider's records outlive the 30 s goal (at 5,000 such
  // providers, ~100 s). Sharing verdicts among a key's k holders, or
  // checking only records served recently, would cut it.
  size_t provider_checks_per_tick = 50;
  // Unanswered PINGs in a row before a provider's records go. 3, as for the
  // routing table: with 1% loss each way a live provider fails three
  // round trips in a row with probability 8e-6.
  int provider_check_attempts = 3;
  // Where peers fetch our blobs; empty means the transport's endpoint.
  absl::optional<Endpoint> provider_endpoint;
};

// Counters for tests and metrics; they only grow.
struct NodeCounters {
  uint64_t lookups_started = 0;
  uint64_t lookup_requests = 0;  // FIND_NODE / GET_PROVIDERS sent by lookups.
  uint64_t soft_timeouts = 0;
  uint64_t rtt_samples = 0;  // Lookup replies timed for the soft timeout.
  uint64_t eviction_pings = 0;
  uint64_t records_refused = 0;    // ADD_PROVIDER keys the store refused.
  uint64_t provider_pings = 0;     // PINGs sent by provider checks.
  uint64_t providers_removed = 0;  // Providers dropped by the checks.
  uint64_t republished_keys = 0;   // Keys re-announced by republish rounds.
};

struct FindProvidersResult {
  std::vector<Endpoint> providers;  // Distinct, in the order found.
  // Lookup hops until the first provider was found (0: from our own store),
  // or the lookup's depth when none was found. See Lookup::hops().
  int hops = 0;
  size_t queried = 0;  // Requests the lookup sent.
};

// Set up and driven on the event-loop thread. Callbacks passed to the public
// methods run exactly once, later, on that thread, never from inside the
// method itself; destroying the node drops callbacks that have not run.
// Code on other threads goes through Dht (dht.h), which posts to the loop.
// Keys passed to Provide() are re-provided every republish_interval until
// they are withdrawn; while there are any, the republish timer keeps a
// simulation from going idle too.
// TODO: the set of provided keys lives in memory only; a restarted node
// relies on its owner to Provide() again (shoald does, at start).
// The provider-check tick (provider_check_interval) re-arms itself while the
// node holds records of other providers, so a simulation that holds records
// never goes idle: drive it with RunFor/RunUntil, not RunUntilIdle. The same
// tick runs ProviderStore::ExpireAll() at most once a minute.
// TODO: a node holding only its own records never runs ExpireAll(), so its
// expired records are hidden but held until their key is added to again.
class Node {
 public:
  using DoneCallback = std::function<void(absl::Status)>;
  using FindProvidersCallback = std::function<void(FindProvidersResult)>;
  using FindClosestNodesCallback = std::function<void(std::vector<Contact>)>;

  // `transport`, `clock` and `gen` must outlive the node. `gen` draws RPC
  // request IDs and must be unpredictable in production (absl::BitGen).
  Node(const NodeId& id, Transport& transport, Clock& clock,
       absl::BitGenRef gen, NodeOptions options = {});
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Joins the network (paper, 2.3): sends FIND_NODE(self) to every seed
  // endpoint, then looks up our own ID through what they return. `done`
  // gets OK if at least one contact was learned, UNAVAILABLE otherwise.
  void Bootstrap(const std::vector<Endpoint>& seeds, DoneCallback done);

  // The k closest live nodes to `target` found by a FIND_NODE lookup,
  // closest first (our own ID excluded).
  void FindClosestNodes(const NodeId& target, FindClosestNodesCallback done);

  // Looks `key` up with GET_PROVIDERS, starting with our own store, and
  // stops after options.enough_providers (default 1) or when the lookup
  // converges; slow contacts (soft timeout passed) do not hold convergence.
  void FindProviders(const NodeId& key, FindProvidersCallback done);

  // Announces that this node provides every key in `keys` and adds them to
  // the set republished every options.republish_interval: one FIND_NODE
  // lookup per key, then ADD_PROVIDER to the k closest nodes of each key,
  // keys grouped per destination and split at 32 per message. Also stores
  // the record locally when we are among a key's k closest. `done` gets OK
  // if every key was acknowledged by at least one node (or stored locally),
  // else UNAVAILABLE with the number of keys that were not.
  void Provide(const std::vector<NodeId>& keys, DoneCallback done);

  // Withdraws `keys` the same way (WITHDRAW_PROVIDER to each key's current k
  // closest and from our own store) and stops republishing them. `done` as
  // for Provide.
  // TODO: nodes that were among a key's k closest at Provide time but are
  // not now keep the record until its TTL (24 h) runs out; remembering where
  // each key was stored would reach them.
  void Withdraw(const std::vector<NodeId>& keys, DoneCallback done);

  const NodeId& id() const { return id_; }
  Endpoint endpoint() const { return transport_.local_endpoint(); }
  const RoutingTable& routing_table() const { return table_; }
  const ProviderStore& provider_store() const { return store_; }
  const RpcCounters& rpc_counters() const { return rpc_.counters(); }
  const NodeCounters& counters() const { return counters_; }
  // The clock the node runs on, for callers on its loop thread that need a
  // timer of their own.
  Clock& clock() const { return clock_; }

 private:
  enum class LookupKind { kFindNode, kGetProviders };
  struct LookupRun;
  struct BootstrapRun;
  struct Announcement;
  using LookupDone = std::function<void(const Lookup&)>;

  // Incoming requests, one handler per body.
  void OnRequest(const Endpoint& from, Message request);
  Body HandleFindNode(const FindNode& request) const;
  Body HandleGetProviders(const GetProviders& request) const;
  Body HandleAddProvider(const Contact& sender, const AddProvider& request);
  Body HandleWithdraw(const NodeId& sender, const WithdrawProvider& request);

  // Routing table upkeep.
  void Learn(const Contact& contact);
  void PingCandidate(const Contact& candidate);
  void Forget(const NodeId& id);
  // Learns from a reply to a request sent to `to`. Returns true if it came
  // from `to`'s node ID; a different ID means `to` is gone from there.
  bool LearnFromReply(const Contact& to, const absl::StatusOr<Message>& reply);

  // Lookups.
  void StartLookup(const NodeId& target, LookupKind kind,
                   const std::vector<Endpoint>& local_providers,
                   LookupDone done);
  void Pump(uint64_t lookup_id);
  void SendLookupRequest(uint64_t lookup_id, LookupRun& run, const Contact& to);
  void OnLookupReply(uint64_t lookup_id, const Contact& to, absl::Time sent,
                     absl::StatusOr<Message> reply);
  // Folds one lookup round trip into srtt_ and returns the soft timeout.
  void SampleRtt(absl::Duration rtt);
  absl::Duration SoftTimeout() const;
  void OnSoftTimeout(uint64_t lookup_id, const NodeId& to);
  void FinishLookup(uint64_t lookup_id);

  // Bootstrap.
  bool SendBootstrapRequest(uint64_t op, const Endpoint& seed, int attempt);
  void OnBootstrapReply(uint64_t op, const Endpoint& seed, int attempt,
                        absl::StatusOr<Message> reply);
  void FinishBootstrap(uint64_t op);

  // Provide / Withdraw.
  void Announce(const std::vector<NodeId>& keys, bool withdraw,
                DoneCallback done);
  void OnAnnounceLookup(uint64_t op, const NodeId& key, const Lookup& lookup);
  void SendAnnouncements(uint64_t op);
  std::vector<Body> AnnouncementBodies(const Announcement& announcement,
                                       const std::vector<NodeId>& keys);
  void OnAnnounceReply(uint64_t op, const Body& body, const Contact& to,
                       absl::StatusOr<Message> reply);
  void FinishAnnouncement(uint64_t op);
  bool AmongClosest(const NodeId& key,
                    const std::vector<Contact>& closest) const;

  // Provider checks.
  struct WatchedProvider;
  void Heard(const NodeId& id);
  void ArmProviderCheck();
  void OnProviderCheckTick();
  void PingProvider(const NodeId& id, int attempt);
  void OnProviderPong(const NodeId& id, int attempt,
                      const absl::StatusOr<Message>& reply);

  // Republish.
  void ArmRepublish(absl::Duration delay);
  void OnRepublishTick();
  void OnRepublishBatchDone(absl::Time started, absl::Status status);

  // Runs `callback` on the loop soon, never inside the caller.
  void Defer(std::function<void()> callback);

  // Set at construction.
  const NodeId id_;
  Transport& transport_;
  Clock& clock_;
  const NodeOptions options_;
  const Endpoint provider_endpoint_;

  RoutingTable table_;
  ProviderStore store_;
  RpcManager rpc_;
  // Operations in flight by ID; a callback whose operation is gone (finished
  // or never started) does nothing.
  uint64_t next_op_id_ = 1;
  absl::flat_hash_map<uint64_t, std::unique_ptr<LookupRun>> lookups_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<BootstrapRun>> bootstraps_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Announcement>> announcements_;
  // Defer() timers still pending, cancelled by the destructor.
  absl::flat_hash_map<uint64_t, Clock::TimerId> deferred_;
  // Providers we hold records of (ourselves excepted), by ID, and the
  // pending check tick (kNoTimer when none).
  absl::flat_hash_map<NodeId, WatchedProvider> watched_;
  Clock::TimerId check_timer_ = Clock::kNoTimer;
  absl::Time last_expire_all_ = absl::InfinitePast();
  // Keys we provide (Provide adds, Withdraw removes), ordered so that
  // simulations stay deterministic; the current republish round's keys not
  // yet re-provided; the round's start and gap between batches; the pending
  // tick (kNoTimer when none or while a batch is in flight).
  std::set<NodeId> provided_;
  std::deque<NodeId> republish_queue_;
  absl::Time round_start_ = absl::InfinitePast();
  absl::Duration batch_spacing_ = absl::ZeroDuration();
  Clock::TimerId republish_timer_ = Clock::kNoTimer;
  bool republish_in_flight_ = false;
  // Smoothed round trip of lookup requests (RFC 6298's gain of 1/8); zero
  // until the first reply.
  absl::Duration srtt_ = absl::ZeroDuration();
  NodeCounters counters_;
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_NODE_H_
