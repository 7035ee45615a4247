// The DHT request layer: sends requests with random request IDs, matches
// replies by (request ID, sender endpoint), times requests out, and admits
// incoming requests through a per-source rate limiter. Runs on the event-loop
// thread that drives its Transport and Clock: not thread-safe, takes no
// locks. README.md ("Request layer") lists the rules.
#ifndef SHOAL_DHT_RPC_H_
#define SHOAL_DHT_RPC_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "dht/codec.h"
#include "dht/endpoint.h"
#include "dht/node_id.h"
#include "dht/rate_limiter.h"
#include "dht/transport.h"

namespace shoal::dht {

struct RpcOptions {
  // How long a request waits for its reply. A LAN round trip is ~0.5 ms
  // (0.25 ms each way); 300 ms is 600 of them, so a live peer on a loaded
  // host almost never misses it, while a lookup stuck on a dead peer loses
  // only 0.3 s per hop.
  // TODO: not yet a flag and not adaptive; across a WAN (100+ ms round trips)
  // it times out live peers, which the routing table then drops after three
  // misses. Per-peer RTT estimates (as TCP's RTO) would fix both.
  absl::Duration timeout = absl::Milliseconds(300);
  // How long a finished request is remembered, so that a reply arriving
  // after it is counted as late or duplicate rather than unsolicited. 10 s
  // covers any plausible queueing delay; it only affects counters.
  absl::Duration remember_finished = absl::Seconds(10);
  // At most this many finished requests are remembered (~100 bytes each).
  size_t max_remembered = 10000;
  // Limits on incoming requests per source address.
  RateLimiterOptions rate_limit;
};

// Counters for tests and metrics; they only grow.
struct RpcCounters {
  uint64_t requests_sent = 0;
  uint64_t send_failures = 0;        // Encode or Transport::Send failed.
  uint64_t replies_matched = 0;      // Delivered to a callback.
  uint64_t timeouts = 0;             // Delivered to a callback as an error.
  uint64_t late_replies = 0;         // For a request that had timed out.
  uint64_t duplicate_replies = 0;    // For a request already answered.
  uint64_t unsolicited_replies = 0;  // Matches no request we remember.
  uint64_t wrong_type_replies = 0;   // Matched, but not the expected body.
  uint64_t malformed = 0;            // Failed to decode.
  uint64_t requests_received = 0;    // Passed to the request handler.
  uint64_t requests_rate_limited = 0;
};

class RpcManager {
 public:
  // Gets exactly one outcome per request: the decoded reply, or
  // DEADLINE_EXCEEDED after the timeout. Runs on the event-loop thread,
  // never from inside SendRequest(); it may send new requests.
  using ReplyCallback = std::function<void(absl::StatusOr<Message> reply)>;
  // Gets every admitted incoming request. Answer with SendReply() using
  // `request.request_id`, now or later.
  using RequestHandler =
      std::function<void(const Endpoint& from, Message request)>;

  // `transport`, `clock` and `gen` must outlive this object. `gen` draws the
  // request IDs, so in production it must be unpredictable (absl::BitGen):
  // an off-path attacker who guesses an ID can forge the reply. Installs
  // the transport's receive callback; the destructor removes it.
  RpcManager(const NodeId& self, Transport& transport, Clock& clock,
             absl::BitGenRef gen, RpcOptions options = {});
  // Cancels every timer. Callbacks of requests still pending are destroyed
  // without running, so callers must not destroy this object while waiting
  // for an outcome they rely on.
  ~RpcManager();
  RpcManager(const RpcManager&) = delete;
  RpcManager& operator=(const RpcManager&) = delete;

  // Installs the handler for incoming requests; until then they are
  // dropped (and counted as received).
  void SetRequestHandler(RequestHandler handler);

  // Sends `request` (PING, FIND_NODE, GET_PROVIDERS, ADD_PROVIDER or
  // WITHDRAW_PROVIDER) to `to` with a fresh random request ID. On OK, `done`
  // runs exactly once later. On error (INVALID_ARGUMENT for a body that is
  // not a request or does not encode, or the transport's error) nothing is
  // pending and `done` never runs.
  absl::Status SendRequest(const Endpoint& to, Body request,
                           ReplyCallback done);
  absl::Status SendRequest(const Endpoint& to, Body request,
                           absl::Duration timeout, ReplyCallback done);

  // Sends `reply` (PONG, NODES or PROVIDERS) for `request_id` to `to`.
  // NODES and PROVIDERS are trimmed to fit a datagram first.
  absl::Status SendReply(const Endpoint& to, uint64_t request_id, Body reply);

  // Requests waiting for an outcome.
  size_t pending() const { return pending_.size(); }
  const RpcCounters& counters() const { return counters_; }

 private:
  using Key = std::pair<uint64_t, Endpoint>;  // (request ID, peer).
  struct Pending {
    size_t expected_body;  // Body::index() of the reply we accept.
    Clock::TimerId timer;
    ReplyCallback done;
  };
  enum class Outcome { kReplied, kTimedOut };

  void OnDatagram(const Endpoint& from, absl::string_view datagram);
  void HandleRequest(const Endpoint& from, Message request);
  void HandleReply(const Endpoint& from, Message reply);
  void CountUnmatchedReply(const Key& key);
  void OnTimeout(const Key& key);
  uint64_t FreshRequestId(const Endpoint& to);
  void Remember(const Key& key, Outcome outcome);
  void ForgetOldFinished();

  // Set at construction.
  const NodeId self_;
  Transport& transport_;
  Clock& clock_;
  absl::BitGenRef gen_;
  const RpcOptions options_;

  RequestHandler handler_;
  SourceRateLimiter limiter_;
  absl::flat_hash_map<Key, Pending> pending_;
  // Recently finished requests, oldest first in `finished_order_`.
  absl::flat_hash_map<Key, Outcome> finished_;
  std::deque<std::pair<absl::Time, Key>> finished_order_;
  RpcCounters counters_;
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_RPC_H_
