// The DHT's public, thread-safe API: owns the production EventLoop, a
// UdpTransport and a Node, all three used on the loop thread only. Every
// method may be called from any thread except where stated; it posts its
// work to the loop thread and returns at once. Callbacks run on the loop
// thread: they must not block (no waiting for other Dht calls, no disk or
// network I/O), or every lookup and timer of this node stalls.
#ifndef SHOAL_DHT_DHT_H_
#define SHOAL_DHT_DHT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dht/endpoint.h"
#include "dht/event_loop.h"
#include "dht/node.h"
#include "dht/node_id.h"
#include "dht/udp_transport.h"

namespace shoal::dht {

// Work is done in the order it was posted. Each callback runs at most once;
// callbacks still pending when the Dht is destroyed are dropped unrun, so
// a callback may use state that the Dht's owner destroys after the Dht.
class Dht {
 public:
  using DoneCallback = std::function<void(absl::Status)>;
  using FindProvidersCallback =
      std::function<void(absl::StatusOr<FindProvidersResult>)>;

  // Starts the loop thread, then on it binds the UDP socket to `ip` (IPv4 or
  // IPv6 literal; peers are told to fetch from it unless
  // options.provider_endpoint says otherwise) and `port` (0 picks a free
  // one) and creates the node with a random ID. INVALID_ARGUMENT for a bad
  // address, UNAVAILABLE when the socket cannot be bound.
  static absl::StatusOr<std::unique_ptr<Dht>> Create(const std::string& ip,
                                                     uint16_t port,
                                                     NodeOptions options = {});

  // Destroys the node and the transport on the loop thread, then stops the
  // loop. Pending callbacks and work not yet run are dropped. Not from the
  // loop thread (that is, not from a callback).
  ~Dht();
  Dht(const Dht&) = delete;
  Dht& operator=(const Dht&) = delete;

  // The bound UDP endpoint.
  const Endpoint& endpoint() const { return endpoint_; }

  // Node::Bootstrap: `done` gets OK once a contact was learned, UNAVAILABLE
  // if no seed answered.
  void Bootstrap(std::vector<Endpoint> seeds, DoneCallback done);
  // Node::Provide and Node::Withdraw: OK if every key was acknowledged by at
  // least one node, else UNAVAILABLE with the number of keys that were not.
  void Provide(std::vector<NodeId> keys, DoneCallback done);
  void Withdraw(std::vector<NodeId> keys, DoneCallback done);

  // Node::FindProviders, bounded by `deadline` counted from this call:
  // `done` gets the result, or DEADLINE_EXCEEDED if the lookup has not
  // finished by then (the lookup itself runs on; its result is dropped).
  // absl::InfiniteDuration() sets no deadline.
  void FindProviders(const NodeId& key, absl::Duration deadline,
                     FindProvidersCallback done);

  // Runs `fn` on the loop thread with the node, after work posted before it,
  // for callers that need more than the calls above (the routing table, the
  // node's counters, several calls in one step). Dropped if the Dht is
  // being destroyed. The node reference is valid during `fn` and in
  // callbacks the node runs; do not keep it beyond them.
  void RunOnLoop(std::function<void(Node&)> fn);

 private:
  explicit Dht(std::unique_ptr<EventLoop> loop) : loop_(std::move(loop)) {}

  // Posts `fn` to the loop and waits for it. Not from the loop thread.
  void RunOnLoopAndWait(std::function<void()> fn);

  // Set at construction.
  std::unique_ptr<EventLoop> loop_;
  Endpoint endpoint_;

  // Loop thread only (created and destroyed there); node_ is null before
  // Create() finished and once teardown began.
  absl::BitGen gen_;
  std::unique_ptr<UdpTransport> transport_;
  std::unique_ptr<Node> node_;
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_DHT_H_
