// 256-bit Kademlia node IDs and keys, and the XOR metric over them
// (Maymounkov & Mazieres, section 2.1). A plain value type: copyable,
// comparable, hashable with absl::Hash; safe to use from any thread.
#ifndef SHOAL_DHT_NODE_ID_H_
#define SHOAL_DHT_NODE_ID_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace shoal::dht {

// A node ID or a content key; both live in the same 256-bit space. Shoal uses
// 256 bits instead of the paper's 160 so that a key is exactly the SHA-256 of
// a blob digest string, with no truncation.
class NodeId {
 public:
  static constexpr size_t kBytes = 32;
  static constexpr int kBits = 256;
  using Bytes = std::array<uint8_t, kBytes>;

  // The all-zero ID.
  NodeId() : bytes_{} {}
  explicit NodeId(const Bytes& bytes) : bytes_(bytes) {}

  // `bytes` must be exactly 32 bytes (big-endian, most significant first);
  // otherwise INVALID_ARGUMENT saying how many were given.
  static absl::StatusOr<NodeId> FromBytes(absl::string_view bytes);

  // Parses 64 hex digits, either case. INVALID_ARGUMENT names the wrong
  // length or the first bad character and its position.
  static absl::StatusOr<NodeId> FromHex(absl::string_view hex);

  // SHA-256 of `key`: how a content key (e.g. "sha256:<hex>" blob digest)
  // maps into the ID space.
  static NodeId ForKey(absl::string_view key);

  // A uniformly random ID drawn from `gen`, any uniform random bit generator
  // (absl::BitGen in production, a seeded engine in tests).
  template <typename URBG>
  static NodeId Random(URBG& gen) {
    Bytes bytes;
    for (size_t i = 0; i < kBytes; i += 8) {
      uint64_t word = absl::Uniform<uint64_t>(gen);
      for (size_t j = 0; j < 8; ++j) bytes[i + j] = (word >> (8 * j)) & 0xff;
    }
    return NodeId(bytes);
  }

  const Bytes& bytes() const { return bytes_; }
  // The 32 raw bytes, for the wire.
  std::string ToBytes() const;
  // 64 lowercase hex digits.
  std::string ToHex() const;
  // First 8 hex digits, for logs.
  std::string ShortHex() const;

  // Bit `i` counted from the most significant bit (i in [0, 256)).
  bool Bit(int i) const;

  friend bool operator==(const NodeId& a, const NodeId& b) {
    return a.bytes_ == b.bytes_;
  }
  friend bool operator!=(const NodeId& a, const NodeId& b) { return !(a == b); }
  // Numeric order; on distances (see Distance) this is "closer than".
  friend bool operator<(const NodeId& a, const NodeId& b) {
    return a.bytes_ < b.bytes_;
  }
  friend bool operator>(const NodeId& a, const NodeId& b) { return b < a; }
  friend bool operator<=(const NodeId& a, const NodeId& b) { return !(b < a); }
  friend bool operator>=(const NodeId& a, const NodeId& b) { return !(a < b); }

  template <typename H>
  friend H AbslHashValue(H h, const NodeId& id) {
    return H::combine_contiguous(std::move(h), id.bytes_.data(), kBytes);
  }

 private:
  Bytes bytes_;
};

// a XOR b, the Kademlia distance. Compare distances with operator<.
NodeId Distance(const NodeId& a, const NodeId& b);

// Number of leading bits a and b share, in [0, 256]; 256 when a == b.
int CommonPrefixLength(const NodeId& a, const NodeId& b);

// The paper's bucket index i for `other` seen from `self`: other lies at
// distance [2^i, 2^(i+1)), so i = 255 - CommonPrefixLength. Requires
// self != other (a node never files itself); checked in debug builds.
int BucketIndex(const NodeId& self, const NodeId& other);

// True when a is strictly closer to target than b.
bool CloserTo(const NodeId& target, const NodeId& a, const NodeId& b);

}  // namespace shoal::dht

#endif  // SHOAL_DHT_NODE_ID_H_
