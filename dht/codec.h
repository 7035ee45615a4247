// Encodes and decodes DHT datagrams: one wire.Envelope (dht.proto) per UDP
// datagram, validated field by field into the typed Message below. Stateless
// functions; safe to call from any thread. README.md describes the format.
#ifndef SHOAL_DHT_CODEC_H_
#define SHOAL_DHT_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/variant.h"
#include "dht/endpoint.h"
#include "dht/node_id.h"

namespace shoal::dht {

// Sent in every envelope; a datagram with any other version is rejected.
inline constexpr uint32_t kProtocolVersion = 1;
// Largest datagram sent or accepted, in bytes. IPv6 guarantees a 1280-byte
// MTU; minus 40 bytes of IPv6 and 8 of UDP header leaves 1232. 1200 keeps
// 32 bytes for tunnel or extension headers (QUIC's choice, RFC 9000 section
// 14) so datagrams are never fragmented, and fragments are often dropped.
inline constexpr size_t kMaxDatagramBytes = 1200;
// Contacts in NODES and in PROVIDERS' closer list: k, the bucket size.
inline constexpr size_t kMaxContacts = 20;
// Provider endpoints in one PROVIDERS reply; a fetcher needs only a few.
inline constexpr size_t kMaxProviders = 20;
// Keys in one ADD_PROVIDER or WITHDRAW_PROVIDER. 32 keys of 34 encoded bytes
// plus the envelope and an IPv6 provider fit in 1200 bytes.
inline constexpr size_t kMaxKeysPerMessage = 32;
// Longest provider record lifetime a node asks for; records must be
// republished within it. 48 hours bounds how long a stale record can live.
inline constexpr absl::Duration kMaxProviderTtl = absl::Hours(48);

struct Ping {};
struct Pong {};
struct FindNode {
  NodeId target;
};
struct Nodes {
  std::vector<Contact> contacts;  // Closest first.
};
struct GetProviders {
  NodeId key;
};
struct Providers {
  std::vector<Endpoint> providers;
  std::vector<Contact> closer;  // Closest first.
};
// Provider records are keyed by (key, sender ID); `provider` is where peers
// fetch the blob from, which need not be the DHT endpoint.
// TODO: sender IDs are not authenticated, so a spoofed datagram can add
// records pointing anywhere or withdraw another node's records; a fetcher
// still verifies blob digests, so the cost is wasted dials, not bad data.
struct AddProvider {
  std::vector<NodeId> keys;
  Endpoint provider;
  absl::Duration ttl;  // Whole seconds in [1 s, kMaxProviderTtl].
};
struct WithdrawProvider {
  std::vector<NodeId> keys;
};

using Body = absl::variant<Ping, Pong, FindNode, Nodes, GetProviders, Providers,
                           AddProvider, WithdrawProvider>;

struct Message {
  uint64_t request_id = 0;  // Chosen at random by the requester, echoed.
  NodeId sender;
  Body body;
};

// Serializes `message`. INVALID_ARGUMENT if it breaks a rule Decode checks
// (counts, TTL) or encodes to more than `max_bytes`; TrimToFit first for
// replies whose contact lists may be too long.
absl::StatusOr<std::string> Encode(const Message& message,
                                   size_t max_bytes = kMaxDatagramBytes);

// Parses and validates one datagram. Every failure is INVALID_ARGUMENT with a
// message naming the field and the problem; datagrams over `max_bytes` are
// rejected before parsing. Unknown fields are ignored (forward
// compatibility), but an unknown or missing body is rejected.
absl::StatusOr<Message> Decode(absl::string_view datagram,
                               size_t max_bytes = kMaxDatagramBytes);

// Drops the farthest contacts of a NODES or PROVIDERS body (then providers)
// until `message` encodes in `max_bytes`. 20 IPv6 contacts take 1160 bytes,
// so a full NODES reply over IPv6 loses one or two. Other bodies unchanged.
void TrimToFit(Message& message, size_t max_bytes = kMaxDatagramBytes);

// Splits `keys` into as few ADD_PROVIDER bodies as stay under `max_bytes`
// each once wrapped in an envelope; the caller adds request IDs and sends
// them. INVALID_ARGUMENT if `keys` is empty, `provider` or `ttl` is invalid,
// or `max_bytes` cannot hold even one key.
absl::StatusOr<std::vector<AddProvider>> SplitAddProvider(
    const std::vector<NodeId>& keys, const Endpoint& provider,
    absl::Duration ttl, size_t max_bytes = kMaxDatagramBytes);

// "PING", "FIND_NODE", ...: the body's name, for logs.
absl::string_view BodyName(const Body& body);

}  // namespace shoal::dht

#endif  // SHOAL_DHT_CODEC_H_
