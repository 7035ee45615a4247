// A UDP endpoint (IPv4 or IPv6 address and port) and a Kademlia contact (node
// ID plus endpoint). Plain value types; safe to use from any thread.
#ifndef SHOAL_DHT_ENDPOINT_H_
#define SHOAL_DHT_ENDPOINT_H_

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dht/node_id.h"

namespace shoal::dht {

class Endpoint {
 public:
  enum class Family { kIpv4, kIpv6 };

  // 0.0.0.0 port 0; not valid as a peer address. Prefer the factories.
  Endpoint() : family_(Family::kIpv4), address_{}, port_(0) {}

  // `address` is 4 (IPv4) or 16 (IPv6) bytes in network order, `port` in
  // [1, 65535]. INVALID_ARGUMENT when either is out of range or the address
  // is unspecified (0.0.0.0, ::), which no peer can be reached at.
  static absl::StatusOr<Endpoint> FromBytes(absl::string_view address,
                                            uint32_t port);

  // Parses "1.2.3.4:5" or "[2001:db8::1]:5". INVALID_ARGUMENT names the part
  // that is wrong. IPv4-mapped IPv6 addresses stay IPv6.
  static absl::StatusOr<Endpoint> Parse(absl::string_view text);

  Family family() const { return family_; }
  uint16_t port() const { return port_; }
  // The 4 or 16 address bytes, for the wire.
  std::string AddressBytes() const;
  // "1.2.3.4:5" or "[2001:db8::1]:5"; Parse() accepts it back.
  std::string ToString() const;

  friend bool operator==(const Endpoint& a, const Endpoint& b) {
    return a.family_ == b.family_ && a.address_ == b.address_ &&
           a.port_ == b.port_;
  }
  friend bool operator!=(const Endpoint& a, const Endpoint& b) {
    return !(a == b);
  }
  template <typename H>
  friend H AbslHashValue(H h, const Endpoint& e) {
    return H::combine(std::move(h), e.family_, e.address_, e.port_);
  }

 private:
  Family family_;
  // IPv4 uses the first 4 bytes; the rest stay zero so == and hash work.
  std::array<uint8_t, 16> address_;
  uint16_t port_;
};

// A node as the routing table and the wire see it.
struct Contact {
  NodeId id;
  Endpoint endpoint;

  friend bool operator==(const Contact& a, const Contact& b) {
    return a.id == b.id && a.endpoint == b.endpoint;
  }
  friend bool operator!=(const Contact& a, const Contact& b) {
    return !(a == b);
  }
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_ENDPOINT_H_
