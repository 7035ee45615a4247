// Transport over a real UDP socket (IPv4 or IPv6), driven by an EventLoop:
// datagrams are read and delivered on the loop thread. Send() may be called
// from the loop thread only, like the rest of the DHT core.
#ifndef SHOAL_DHT_UDP_TRANSPORT_H_
#define SHOAL_DHT_UDP_TRANSPORT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "dht/event_loop.h"
#include "dht/transport.h"

namespace shoal::dht {

// Largest datagram sent or accepted. The codec keeps messages at 1,200 bytes
// (no IP fragmentation); anything longer that arrives is truncated by the
// kernel and dropped here.
inline constexpr size_t kMaxUdpPayloadBytes = 2048;

class UdpTransport : public Transport {
 public:
  // Binds a UDP socket to `ip` (IPv4 or IPv6 literal) and `port` (0 picks a
  // free one) and starts reading on `loop`, which must outlive the
  // transport. INVALID_ARGUMENT for a bad address; UNAVAILABLE when the
  // socket cannot be bound.
  static absl::StatusOr<std::unique_ptr<UdpTransport>> Create(
      EventLoop* loop, const std::string& ip, uint16_t port);

  // Destroy on the loop thread, or after the loop has stopped: a read in
  // progress on the loop thread would otherwise outlive the transport.
  ~UdpTransport() override;

  // Transport
  void SetReceiveCallback(ReceiveCallback callback) override;
  absl::Status Send(const Endpoint& to, absl::string_view datagram) override;
  Endpoint local_endpoint() const override { return local_; }

  // Datagrams dropped on receipt: truncated (too long) or from an address
  // that is no valid peer endpoint. Loop thread only.
  uint64_t dropped() const { return dropped_; }

 private:
  UdpTransport(EventLoop* loop, int fd, Endpoint local)
      : loop_(loop), fd_(fd), local_(local) {}

  void OnReadable();

  EventLoop* const loop_;  // Not owned.
  const int fd_;
  const Endpoint local_;
  ReceiveCallback callback_;
  uint64_t dropped_ = 0;
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_UDP_TRANSPORT_H_
