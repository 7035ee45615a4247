#include "dht/node_id.h"

#include <openssl/sha.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace shoal::dht {
namespace {

// Value of hex digit `c`, or -1.
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::StatusOr<NodeId> NodeId::FromBytes(absl::string_view bytes) {
  if (bytes.size() != kBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("node id must be ", kBytes, " bytes, got ", bytes.size()));
  }
  Bytes out;
  std::copy(bytes.begin(), bytes.end(), out.begin());
  return NodeId(out);
}

absl::StatusOr<NodeId> NodeId::FromHex(absl::string_view hex) {
  if (hex.size() != 2 * kBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node id hex must be ", 2 * kBytes, " characters, got ", hex.size()));
  }
  Bytes out;
  for (size_t i = 0; i < hex.size(); ++i) {
    int value = HexValue(hex[i]);
    if (value < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "node id hex has non-hex character '",
          absl::CHexEscape(hex.substr(i, 1)), "' at position ", i));
    }
    if (i % 2 == 0) {
      out[i / 2] = value << 4;
    } else {
      out[i / 2] |= value;
    }
  }
  return NodeId(out);
}

NodeId NodeId::ForKey(absl::string_view key) {
  Bytes out;
  // One-shot SHA256() cannot fail for in-memory input.
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(),
         out.data());
  return NodeId(out);
}

std::string NodeId::ToBytes() const {
  return std::string(reinterpret_cast<const char*>(bytes_.data()), kBytes);
}

std::string NodeId::ToHex() const { return absl::BytesToHexString(ToBytes()); }

std::string NodeId::ShortHex() const { return ToHex().substr(0, 8); }

bool NodeId::Bit(int i) const {
  DCHECK(i >= 0 && i < kBits) << "bit index " << i;
  return (bytes_[i / 8] >> (7 - i % 8)) & 1;
}

NodeId Distance(const NodeId& a, const NodeId& b) {
  NodeId::Bytes out;
  for (size_t i = 0; i < NodeId::kBytes; ++i) {
    out[i] = a.bytes()[i] ^ b.bytes()[i];
  }
  return NodeId(out);
}

int CommonPrefixLength(const NodeId& a, const NodeId& b) {
  for (size_t i = 0; i < NodeId::kBytes; ++i) {
    uint8_t diff = a.bytes()[i] ^ b.bytes()[i];
    if (diff != 0) return 8 * i + __builtin_clz(diff) - 24;
  }
  return NodeId::kBits;
}

int BucketIndex(const NodeId& self, const NodeId& other) {
  DCHECK(self != other) << "bucket index of own id " << self.ShortHex();
  return NodeId::kBits - 1 - CommonPrefixLength(self, other);
}

bool CloserTo(const NodeId& target, const NodeId& a, const NodeId& b) {
  return Distance(target, a) < Distance(target, b);
}

}  // namespace shoal::dht
