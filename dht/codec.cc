#include "dht/codec.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "dht/internal/status_macros.h"
#include "dht/proto/dht.pb.h"

namespace shoal::dht {
namespace {

using WireEnvelope = ::shoal::dht::wire::Envelope;
using WireContact = ::shoal::dht::wire::Contact;

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

// ---- Decoding: wire -> typed, validating every field. ----

absl::StatusOr<NodeId> ParseId(absl::string_view field,
                               const std::string& bytes) {
  absl::StatusOr<NodeId> id = NodeId::FromBytes(bytes);
  if (!id.ok()) return Invalid(field, id.status().message());
  return id;
}

absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view field,
                                       const std::string& address,
                                       uint32_t port) {
  absl::StatusOr<Endpoint> e = Endpoint::FromBytes(address, port);
  if (!e.ok()) return Invalid(field, e.status().message());
  return e;
}

absl::Status CheckCount(absl::string_view field, int count, size_t min,
                        size_t max) {
  if (static_cast<size_t>(count) < min || static_cast<size_t>(count) > max) {
    return Invalid(field, absl::StrCat("count must be in [", min, ", ", max,
                                       "], got ", count));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Contact>> ParseContacts(
    absl::string_view field,
    const google::protobuf::RepeatedPtrField<WireContact>& wire) {
  DHT_RETURN_IF_ERROR(CheckCount(field, wire.size(), 0, kMaxContacts));
  std::vector<Contact> out;
  for (int i = 0; i < wire.size(); ++i) {
    std::string at = absl::StrCat(field, "[", i, "]");
    DHT_ASSIGN_OR_RETURN(NodeId id, ParseId(at + ".id", wire[i].id()));
    DHT_ASSIGN_OR_RETURN(Endpoint ep,
                         ParseEndpoint(at, wire[i].address(), wire[i].port()));
    out.push_back(Contact{id, ep});
  }
  return out;
}

absl::StatusOr<std::vector<NodeId>> ParseKeys(
    absl::string_view field,
    const google::protobuf::RepeatedPtrField<std::string>& wire) {
  DHT_RETURN_IF_ERROR(CheckCount(field, wire.size(), 1, kMaxKeysPerMessage));
  std::vector<NodeId> out;
  for (int i = 0; i < wire.size(); ++i) {
    DHT_ASSIGN_OR_RETURN(NodeId key,
                         ParseId(absl::StrCat(field, "[", i, "]"), wire[i]));
    out.push_back(key);
  }
  return out;
}

absl::StatusOr<Body> ParseProviders(const wire::Providers& wire) {
  Providers out;
  DHT_RETURN_IF_ERROR(CheckCount("providers.providers", wire.providers().size(),
                                 0, kMaxProviders));
  for (int i = 0; i < wire.providers().size(); ++i) {
    const wire::Endpoint& p = wire.providers(i);
    DHT_ASSIGN_OR_RETURN(
        Endpoint ep, ParseEndpoint(absl::StrCat("providers.providers[", i, "]"),
                                   p.address(), p.port()));
    out.providers.push_back(ep);
  }
  DHT_ASSIGN_OR_RETURN(out.closer,
                       ParseContacts("providers.closer", wire.closer()));
  return out;
}

absl::StatusOr<Body> ParseAddProvider(const wire::AddProvider& wire) {
  AddProvider out;
  DHT_ASSIGN_OR_RETURN(out.keys, ParseKeys("add_provider.keys", wire.keys()));
  if (!wire.has_provider()) return Invalid("add_provider.provider", "missing");
  DHT_ASSIGN_OR_RETURN(out.provider, ParseEndpoint("add_provider.provider",
                                                   wire.provider().address(),
                                                   wire.provider().port()));
  uint32_t ttl = wire.ttl_seconds();
  if (ttl == 0 || ttl > absl::ToInt64Seconds(kMaxProviderTtl)) {
    return Invalid(
        "add_provider.ttl_seconds",
        absl::StrCat("must be in [1, ", absl::ToInt64Seconds(kMaxProviderTtl),
                     "], got ", ttl));
  }
  out.ttl = absl::Seconds(ttl);
  return out;
}

absl::StatusOr<Body> ParseBody(const WireEnvelope& env) {
  switch (env.body_case()) {
    case WireEnvelope::kPing:
      return Ping{};
    case WireEnvelope::kPong:
      return Pong{};
    case WireEnvelope::kFindNode: {
      DHT_ASSIGN_OR_RETURN(
          NodeId target, ParseId("find_node.target", env.find_node().target()));
      return FindNode{target};
    }
    case WireEnvelope::kNodes: {
      DHT_ASSIGN_OR_RETURN(
          std::vector<Contact> contacts,
          ParseContacts("nodes.contacts", env.nodes().contacts()));
      return Nodes{std::move(contacts)};
    }
    case WireEnvelope::kGetProviders: {
      DHT_ASSIGN_OR_RETURN(
          NodeId key, ParseId("get_providers.key", env.get_providers().key()));
      return GetProviders{key};
    }
    case WireEnvelope::kProviders:
      return ParseProviders(env.providers());
    case WireEnvelope::kAddProvider:
      return ParseAddProvider(env.add_provider());
    case WireEnvelope::kWithdrawProvider: {
      DHT_ASSIGN_OR_RETURN(
          std::vector<NodeId> keys,
          ParseKeys("withdraw_provider.keys", env.withdraw_provider().keys()));
      return WithdrawProvider{std::move(keys)};
    }
    case WireEnvelope::BODY_NOT_SET:
      break;
  }
  return Invalid("body", "missing or of an unknown type");
}

// ---- Encoding: typed -> wire. ----

void SetEndpoint(const Endpoint& e, wire::Endpoint* out) {
  out->set_address(e.AddressBytes());
  out->set_port(e.port());
}

void AddContacts(const std::vector<Contact>& contacts,
                 google::protobuf::RepeatedPtrField<WireContact>* out) {
  for (const Contact& c : contacts) {
    WireContact* w = out->Add();
    w->set_id(c.id.ToBytes());
    w->set_address(c.endpoint.AddressBytes());
    w->set_port(c.endpoint.port());
  }
}

void AddKeys(const std::vector<NodeId>& keys,
             google::protobuf::RepeatedPtrField<std::string>* out) {
  for (const NodeId& key : keys) out->Add(key.ToBytes());
}

// Fills env's body; one overload per body type.
struct BodyToWire {
  WireEnvelope* env;

  void operator()(const Ping&) { env->mutable_ping(); }
  void operator()(const Pong&) { env->mutable_pong(); }
  void operator()(const FindNode& b) {
    env->mutable_find_node()->set_target(b.target.ToBytes());
  }
  void operator()(const Nodes& b) {
    AddContacts(b.contacts, env->mutable_nodes()->mutable_contacts());
  }
  void operator()(const GetProviders& b) {
    env->mutable_get_providers()->set_key(b.key.ToBytes());
  }
  void operator()(const Providers& b) {
    wire::Providers* w = env->mutable_providers();
    for (const Endpoint& e : b.providers) SetEndpoint(e, w->add_providers());
    AddContacts(b.closer, w->mutable_closer());
  }
  void operator()(const AddProvider& b) {
    wire::AddProvider* w = env->mutable_add_provider();
    AddKeys(b.keys, w->mutable_keys());
    SetEndpoint(b.provider, w->mutable_provider());
    // Out-of-range TTLs are clamped into values Decode rejects, so Encode's
    // validation pass catches them.
    int64_t ttl = absl::ToInt64Seconds(b.ttl);
    w->set_ttl_seconds(ttl < 0 || ttl > UINT32_MAX ? 0 : ttl);
  }
  void operator()(const WithdrawProvider& b) {
    AddKeys(b.keys, env->mutable_withdraw_provider()->mutable_keys());
  }
};

WireEnvelope ToWire(const Message& message) {
  WireEnvelope env;
  env.set_version(kProtocolVersion);
  env.set_request_id(message.request_id);
  env.set_sender(message.sender.ToBytes());
  absl::visit(BodyToWire{&env}, message.body);
  return env;
}

absl::StatusOr<Message> FromWire(const WireEnvelope& env) {
  if (env.version() != kProtocolVersion) {
    return Invalid("version", absl::StrCat("unsupported ", env.version(),
                                           ", want ", kProtocolVersion));
  }
  Message out;
  out.request_id = env.request_id();
  DHT_ASSIGN_OR_RETURN(out.sender, ParseId("sender", env.sender()));
  DHT_ASSIGN_OR_RETURN(out.body, ParseBody(env));
  return out;
}

absl::Status CheckSize(size_t size, size_t max_bytes) {
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("datagram is ", size, " bytes, limit is ", max_bytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> Encode(const Message& message, size_t max_bytes) {
  WireEnvelope env = ToWire(message);
  // Running the decoder's checks keeps us from sending what peers drop.
  DHT_RETURN_IF_ERROR(FromWire(env).status());
  DHT_RETURN_IF_ERROR(CheckSize(env.ByteSizeLong(), max_bytes));
  return env.SerializeAsString();
}

absl::StatusOr<Message> Decode(absl::string_view datagram, size_t max_bytes) {
  DHT_RETURN_IF_ERROR(CheckSize(datagram.size(), max_bytes));
  WireEnvelope env;
  if (!env.ParseFromArray(datagram.data(), datagram.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("datagram of ", datagram.size(),
                     " bytes is not a valid protobuf Envelope"));
  }
  return FromWire(env);
}

void TrimToFit(Message& message, size_t max_bytes) {
  auto fits = [&] { return ToWire(message).ByteSizeLong() <= max_bytes; };
  if (auto* nodes = absl::get_if<Nodes>(&message.body)) {
    while (!fits() && !nodes->contacts.empty()) nodes->contacts.pop_back();
  } else if (auto* providers = absl::get_if<Providers>(&message.body)) {
    while (!fits() && !providers->closer.empty()) providers->closer.pop_back();
    while (!fits() && !providers->providers.empty()) {
      providers->providers.pop_back();
    }
  }
}

absl::StatusOr<std::vector<AddProvider>> SplitAddProvider(
    const std::vector<NodeId>& keys, const Endpoint& provider,
    absl::Duration ttl, size_t max_bytes) {
  if (keys.empty()) return Invalid("keys", "empty");
  // Validate provider and TTL once, with a one-key message.
  Message probe{0, NodeId(), AddProvider{{keys[0]}, provider, ttl}};
  DHT_RETURN_IF_ERROR(Encode(probe, max_bytes).status());

  // Each key adds exactly 34 bytes (tag, length, 32 bytes); the body's own
  // length prefix may grow by one byte, hence the spare byte.
  size_t one_key = ToWire(probe).ByteSizeLong();
  size_t per_key = 2 + NodeId::kBytes;
  size_t capacity = one_key + 1 > max_bytes
                        ? 1
                        : std::min(kMaxKeysPerMessage,
                                   1 + (max_bytes - one_key - 1) / per_key);

  std::vector<AddProvider> out;
  for (size_t i = 0; i < keys.size(); i += capacity) {
    size_t end = std::min(keys.size(), i + capacity);
    out.push_back(
        AddProvider{std::vector<NodeId>(keys.begin() + i, keys.begin() + end),
                    provider, ttl});
  }
  return out;
}

absl::string_view BodyName(const Body& body) {
  static constexpr absl::string_view kNames[] = {
      "PING",          "PONG",      "FIND_NODE",    "NODES",
      "GET_PROVIDERS", "PROVIDERS", "ADD_PROVIDER", "WITHDRAW_PROVIDER"};
  return kNames[body.index()];
}

}  // namespace shoal::dht
