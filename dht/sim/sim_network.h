// A deterministic in-process network for DHT tests and simulations: one event
// queue and one simulated clock drive every SimTransport attached to it.
// Datagrams travel with per-link one-way latency, are lost at random from a
// seeded generator, and are blocked by partitions; equal seeds and equal
// calls give identical runs. Single-threaded: the test drives it with
// RunFor()/RunUntil()/RunUntilIdle() and every callback runs inside those.
#ifndef SHOAL_DHT_SIM_SIM_NETWORK_H_
#define SHOAL_DHT_SIM_SIM_NETWORK_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "dht/endpoint.h"
#include "dht/transport.h"

namespace shoal::dht::sim {

class SimNetwork;

// The simulated clock: Now() is the time of the event being run, and timers
// share the network's event queue, so timers and deliveries interleave in
// timestamp order.
class SimClock : public Clock {
 public:
  explicit SimClock(SimNetwork& network) : network_(network) {}

  // Clock
  absl::Time Now() const override;
  TimerId Schedule(absl::Duration delay,
                   std::function<void()> callback) override;
  bool Cancel(TimerId id) override;

 private:
  SimNetwork& network_;
};

// One node's socket on a SimNetwork. Created by SimNetwork::Attach; detaches
// itself when destroyed, after which datagrams to its endpoint are dropped.
class SimTransport : public Transport {
 public:
  ~SimTransport() override;
  SimTransport(const SimTransport&) = delete;
  SimTransport& operator=(const SimTransport&) = delete;

  // Transport
  void SetReceiveCallback(ReceiveCallback callback) override;
  absl::Status Send(const Endpoint& to, absl::string_view datagram) override;
  Endpoint local_endpoint() const override { return endpoint_; }

 private:
  friend class SimNetwork;
  SimTransport(SimNetwork& network, const Endpoint& endpoint)
      : network_(network), endpoint_(endpoint) {}

  SimNetwork& network_;
  const Endpoint endpoint_;
  ReceiveCallback receive_;
};

struct SimNetworkOptions {
  // Seeds the loss generator; the same seed gives the same losses.
  uint64_t seed = 1;
  // One-way latency of links without their own. 0.25 ms is a LAN hop.
  absl::Duration default_latency = absl::Microseconds(250);
  // Probability in [0, 1] that a datagram is lost, independently per datagram.
  double loss_rate = 0;
  // Largest datagram Send() accepts: UDP's limit over IPv4.
  size_t max_datagram_bytes = 65507;
};

// What happened to the datagrams sent so far.
struct SimNetworkCounters {
  uint64_t sent = 0;
  uint64_t delivered = 0;
  uint64_t lost = 0;         // Dropped by random loss.
  uint64_t blocked = 0;      // Dropped by a partition.
  uint64_t unreachable = 0;  // No transport, or none listening.
};

// Owns the event queue and the clock; transports and their users must be
// destroyed before it. Delivery happens at send time + link latency; a
// datagram's fate (loss, partition) is decided when it is sent.
class SimNetwork {
 public:
  explicit SimNetwork(SimNetworkOptions options = {},
                      absl::Time start = absl::FromUnixSeconds(1000000));
  SimNetwork(const SimNetwork&) = delete;
  SimNetwork& operator=(const SimNetwork&) = delete;

  // A transport at `endpoint`. CHECK-fails if the endpoint is taken.
  std::unique_ptr<SimTransport> Attach(const Endpoint& endpoint);

  SimClock& clock() { return clock_; }
  absl::Time Now() const { return now_; }

  // One-way latency from `from` to `to` (not the reverse).
  void SetLatency(const Endpoint& from, const Endpoint& to,
                  absl::Duration latency);
  void SetLossRate(double loss_rate);

  // Blocks both directions between `a` and `b` until Unblock or Heal.
  void Block(const Endpoint& a, const Endpoint& b);
  void Unblock(const Endpoint& a, const Endpoint& b);
  // Blocks every pair with one endpoint in `side_a` and one in `side_b`.
  void Partition(const std::vector<Endpoint>& side_a,
                 const std::vector<Endpoint>& side_b);
  // Puts `endpoint` in partition group `group`: datagrams between endpoints
  // of different groups are blocked. Every endpoint starts in group 0. Costs
  // one entry per endpoint, where Partition() costs one per pair (a
  // 2,500 / 2,500 split would be 12.5 million links).
  void SetGroup(const Endpoint& endpoint, int group);
  // Removes every block and puts every endpoint back in group 0.
  void Heal();

  // Runs events in timestamp order (ties: order scheduled) until none is due
  // at or before `deadline`, then sets the clock to `deadline`.
  void RunUntil(absl::Time deadline);
  void RunFor(absl::Duration d) { RunUntil(now_ + d); }
  // Runs until the queue is empty or `max_events` have run (a guard against
  // timers that re-arm forever). Returns the number run.
  size_t RunUntilIdle(size_t max_events = 1000000);

  const SimNetworkCounters& counters() const { return counters_; }

 private:
  friend class SimClock;
  friend class SimTransport;

  struct Event {
    absl::Time at;
    uint64_t seq;          // Breaks ties in scheduling order.
    Clock::TimerId timer;  // kNoTimer for a datagram delivery.
    std::function<void()> run;
  };
  struct Later {
    bool operator()(const Event& a, const Event& b) const {
      return a.at != b.at ? a.at > b.at : a.seq > b.seq;
    }
  };
  using Link = std::pair<Endpoint, Endpoint>;

  Clock::TimerId ScheduleTimer(absl::Duration delay,
                               std::function<void()> callback);
  bool CancelTimer(Clock::TimerId id);
  void Push(absl::Time at, Clock::TimerId timer, std::function<void()> run);
  bool RunNext();

  absl::Status Send(const Endpoint& from, const Endpoint& to,
                    absl::string_view datagram);
  void Deliver(const Endpoint& from, const Endpoint& to,
               const std::string& datagram);
  void Detach(const Endpoint& endpoint);
  bool IsBlocked(const Endpoint& a, const Endpoint& b) const;

  // Set at construction.
  SimNetworkOptions options_;
  SimClock clock_;

  absl::Time now_;
  std::priority_queue<Event, std::vector<Event>, Later> queue_;
  uint64_t next_seq_ = 0;
  Clock::TimerId next_timer_ = 1;
  absl::flat_hash_set<Clock::TimerId> pending_timers_;
  std::mt19937_64 gen_;

  absl::flat_hash_map<Endpoint, SimTransport*> transports_;  // Not owned.
  absl::flat_hash_map<Link, absl::Duration> latency_;
  absl::flat_hash_set<Link> blocked_;  // Both orders of each blocked pair.
  absl::flat_hash_map<Endpoint, int> group_;  // Absent: group 0.
  SimNetworkCounters counters_;
};

}  // namespace shoal::dht::sim

#endif  // SHOAL_DHT_SIM_SIM_NETWORK_H_
