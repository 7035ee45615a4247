// The DHT's seams to the outside world: a datagram Transport and a Clock with
// timers. The DHT core calls them only from its event-loop thread, and every
// implementation runs callbacks on that same thread, so neither side locks.
// Production binds them to a UDP socket and an event loop; tests and
// simulations use dht/sim/.
#ifndef SHOAL_DHT_TRANSPORT_H_
#define SHOAL_DHT_TRANSPORT_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "dht/endpoint.h"

namespace shoal::dht {

// Unreliable, unordered datagrams, like UDP: a successful Send() means only
// that the datagram left, not that it will arrive.
class Transport {
 public:
  // Runs on the event-loop thread for every datagram received. `datagram`
  // is valid only during the call. `from` is the datagram's source address,
  // which is unauthenticated.
  using ReceiveCallback =
      std::function<void(const Endpoint& from, absl::string_view datagram)>;

  virtual ~Transport() = default;

  // Installs the receive callback. Called once with a callback before any
  // datagram should be read; may be called once more with nullptr to detach
  // before the receiver is destroyed (datagrams are then dropped).
  virtual void SetReceiveCallback(ReceiveCallback callback) = 0;

  // Sends one datagram to `to`. Errors are local only: INVALID_ARGUMENT for
  // a datagram the transport cannot carry, UNAVAILABLE when the socket is
  // closed. Never blocks and never runs the receive callback re-entrantly.
  virtual absl::Status Send(const Endpoint& to, absl::string_view datagram) = 0;

  // The address peers reach this transport at.
  virtual Endpoint local_endpoint() const = 0;
};

// Current time and one-shot timers on the event loop.
class Clock {
 public:
  // Identifies a scheduled callback; never 0, never reused by one Clock.
  using TimerId = uint64_t;
  static constexpr TimerId kNoTimer = 0;

  virtual ~Clock() = default;

  virtual absl::Time Now() const = 0;

  // Runs `callback` once on the event-loop thread no earlier than `delay`
  // from Now() (a negative delay counts as zero), never from inside
  // Schedule() itself. Callbacks due at the same time run in the order they
  // were scheduled.
  virtual TimerId Schedule(absl::Duration delay,
                           std::function<void()> callback) = 0;

  // Cancels a pending callback so that it never runs. Returns false if it
  // already ran, was already cancelled or `id` is unknown.
  virtual bool Cancel(TimerId id) = 0;
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_TRANSPORT_H_
