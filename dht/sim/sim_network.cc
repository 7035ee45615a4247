#include "dht/sim/sim_network.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace shoal::dht::sim {

// ---- SimClock ----

absl::Time SimClock::Now() const { return network_.Now(); }

Clock::TimerId SimClock::Schedule(absl::Duration delay,
                                  std::function<void()> callback) {
  return network_.ScheduleTimer(delay, std::move(callback));
}

bool SimClock::Cancel(TimerId id) { return network_.CancelTimer(id); }

// ---- SimTransport ----

SimTransport::~SimTransport() { network_.Detach(endpoint_); }

void SimTransport::SetReceiveCallback(ReceiveCallback callback) {
  receive_ = std::move(callback);
}

absl::Status SimTransport::Send(const Endpoint& to,
                                absl::string_view datagram) {
  return network_.Send(endpoint_, to, datagram);
}

// ---- SimNetwork ----

SimNetwork::SimNetwork(SimNetworkOptions options, absl::Time start)
    : options_(options), clock_(*this), now_(start), gen_(options.seed) {
  SetLossRate(options.loss_rate);
}

std::unique_ptr<SimTransport> SimNetwork::Attach(const Endpoint& endpoint) {
  CHECK(!transports_.contains(endpoint))
      << "sim: endpoint already attached endpoint=" << endpoint.ToString();
  std::unique_ptr<SimTransport> transport(new SimTransport(*this, endpoint));
  transports_[endpoint] = transport.get();
  return transport;
}

void SimNetwork::Detach(const Endpoint& endpoint) {
  transports_.erase(endpoint);
}

void SimNetwork::SetLatency(const Endpoint& from, const Endpoint& to,
                            absl::Duration latency) {
  CHECK_GE(latency, absl::ZeroDuration());
  latency_[Link(from, to)] = latency;
}

void SimNetwork::SetLossRate(double loss_rate) {
  CHECK(loss_rate >= 0 && loss_rate <= 1) << "loss_rate=" << loss_rate;
  options_.loss_rate = loss_rate;
}

void SimNetwork::Block(const Endpoint& a, const Endpoint& b) {
  blocked_.insert(Link(a, b));
  blocked_.insert(Link(b, a));
}

void SimNetwork::Unblock(const Endpoint& a, const Endpoint& b) {
  blocked_.erase(Link(a, b));
  blocked_.erase(Link(b, a));
}

void SimNetwork::Partition(const std::vector<Endpoint>& side_a,
                           const std::vector<Endpoint>& side_b) {
  for (const Endpoint& a : side_a) {
    for (const Endpoint& b : side_b) Block(a, b);
  }
}

void SimNetwork::SetGroup(const Endpoint& endpoint, int group) {
  if (group == 0) {
    group_.erase(endpoint);
  } else {
    group_[endpoint] = group;
  }
}

void SimNetwork::Heal() {
  blocked_.clear();
  group_.clear();
}

bool SimNetwork::IsBlocked(const Endpoint& a, const Endpoint& b) const {
  if (!group_.empty()) {
    auto a_it = group_.find(a);
    auto b_it = group_.find(b);
    const int a_group = a_it == group_.end() ? 0 : a_it->second;
    const int b_group = b_it == group_.end() ? 0 : b_it->second;
    if (a_group != b_group) return true;
  }
  return blocked_.contains(Link(a, b));
}

Clock::TimerId SimNetwork::ScheduleTimer(absl::Duration delay,
                                         std::function<void()> callback) {
  Clock::TimerId id = next_timer_++;
  pending_timers_.insert(id);
  Push(now_ + std::max(delay, absl::ZeroDuration()), id, std::move(callback));
  return id;
}

bool SimNetwork::CancelTimer(Clock::TimerId id) {
  // The queued event stays and is skipped when it comes up.
  return pending_timers_.erase(id) > 0;
}

void SimNetwork::Push(absl::Time at, Clock::TimerId timer,
                      std::function<void()> run) {
  queue_.push(Event{at, next_seq_++, timer, std::move(run)});
}

absl::Status SimNetwork::Send(const Endpoint& from, const Endpoint& to,
                              absl::string_view datagram) {
  if (datagram.size() > options_.max_datagram_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("sim: datagram of ", datagram.size(), " bytes exceeds ",
                     options_.max_datagram_bytes));
  }
  ++counters_.sent;

  // Draw for every datagram, blocked or not, so that a partition does not
  // shift which later datagrams are lost.
  bool lose =
      std::uniform_real_distribution<double>(0, 1)(gen_) < options_.loss_rate;
  if (IsBlocked(from, to)) {
    ++counters_.blocked;
    return absl::OkStatus();
  }
  if (lose) {
    ++counters_.lost;
    return absl::OkStatus();
  }

  auto link = latency_.find(Link(from, to));
  absl::Duration latency =
      link == latency_.end() ? options_.default_latency : link->second;
  Push(now_ + latency, Clock::kNoTimer,
       [this, from, to, bytes = std::string(datagram)] {
         Deliver(from, to, bytes);
       });
  return absl::OkStatus();
}

void SimNetwork::Deliver(const Endpoint& from, const Endpoint& to,
                         const std::string& datagram) {
  auto it = transports_.find(to);
  if (it == transports_.end() || !it->second->receive_) {
    ++counters_.unreachable;
    return;
  }
  ++counters_.delivered;
  it->second->receive_(from, datagram);
}

bool SimNetwork::RunNext() {
  // Moving out of top() is safe: the comparator reads only `at` and `seq`,
  // which a move leaves intact.
  Event event = std::move(const_cast<Event&>(queue_.top()));
  queue_.pop();
  now_ = std::max(now_, event.at);
  if (event.timer != Clock::kNoTimer &&
      pending_timers_.erase(event.timer) == 0) {
    return false;  // Cancelled.
  }
  event.run();
  return true;
}

void SimNetwork::RunUntil(absl::Time deadline) {
  while (!queue_.empty() && queue_.top().at <= deadline) RunNext();
  now_ = std::max(now_, deadline);
}

size_t SimNetwork::RunUntilIdle(size_t max_events) {
  size_t ran = 0;
  while (!queue_.empty() && ran < max_events) {
    if (RunNext()) ++ran;
  }
  return ran;
}

}  // namespace shoal::dht::sim
