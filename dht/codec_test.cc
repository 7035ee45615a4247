#include "dht/codec.h"

#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "dht/proto/dht.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// Large enough that size never hides the rule under test.
constexpr size_t kNoLimit = 1 << 20;

NodeId Id(uint8_t b) {
  NodeId::Bytes bytes;
  bytes.fill(b);
  return NodeId(bytes);
}

Endpoint V4() { return *Endpoint::Parse("10.0.0.1:4000"); }
Endpoint V6() { return *Endpoint::Parse("[2001:db8::ffff:1]:65000"); }

Message Msg(Body body) { return Message{0x0123456789abcdef, Id(0xaa), body}; }

std::vector<Contact> Contacts(size_t n, const Endpoint& ep) {
  std::vector<Contact> out;
  for (size_t i = 0; i < n; ++i) out.push_back(Contact{Id(i + 1), ep});
  return out;
}

std::vector<NodeId> Keys(size_t n) {
  std::vector<NodeId> out;
  for (size_t i = 0; i < n; ++i) out.push_back(NodeId::ForKey(absl::StrCat(i)));
  return out;
}

Message RoundTrip(const Message& m) {
  absl::StatusOr<std::string> bytes = Encode(m);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<Message> back = Decode(bytes.value_or(""));
  EXPECT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->request_id, m.request_id);
  EXPECT_EQ(back->sender, m.sender);
  EXPECT_EQ(back->body.index(), m.body.index());
  return *back;
}

// A valid envelope on the wire, to be broken by each test.
wire::Envelope ValidWire() {
  wire::Envelope env;
  env.set_version(kProtocolVersion);
  env.set_request_id(7);
  env.set_sender(Id(1).ToBytes());
  env.mutable_ping();
  return env;
}

wire::Contact* AddWireContact(
    google::protobuf::RepeatedPtrField<wire::Contact>* list) {
  wire::Contact* c = list->Add();
  c->set_id(Id(2).ToBytes());
  c->set_address(std::string("\x0a\x00\x00\x01", 4));
  c->set_port(1);
  return c;
}

wire::AddProvider* ValidAddProvider(wire::Envelope& env) {
  wire::AddProvider* a = env.mutable_add_provider();
  a->add_keys(Id(3).ToBytes());
  a->mutable_provider()->set_address(std::string("\x0a\x00\x00\x01", 4));
  a->mutable_provider()->set_port(5000);
  a->set_ttl_seconds(3600);
  return a;
}

// Decodes `env` and expects INVALID_ARGUMENT mentioning `what`.
void ExpectRejected(const wire::Envelope& env, absl::string_view what) {
  absl::StatusOr<Message> m = Decode(env.SerializeAsString(), kNoLimit);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr(std::string(what)));
}

TEST(Codec, RoundTripsPingAndPong) {
  RoundTrip(Msg(Ping{}));
  RoundTrip(Msg(Pong{}));
}

TEST(Codec, RoundTripsFindNodeAndNodes) {
  EXPECT_EQ(absl::get<FindNode>(RoundTrip(Msg(FindNode{Id(9)})).body).target,
            Id(9));
  std::vector<Contact> contacts = {Contact{Id(1), V4()}, Contact{Id(2), V6()}};
  EXPECT_EQ(absl::get<Nodes>(RoundTrip(Msg(Nodes{contacts})).body).contacts,
            contacts);
  EXPECT_THAT(absl::get<Nodes>(RoundTrip(Msg(Nodes{})).body).contacts,
              SizeIs(0));
}

TEST(Codec, RoundTripsProviderMessages) {
  EXPECT_EQ(
      absl::get<GetProviders>(RoundTrip(Msg(GetProviders{Id(4)})).body).key,
      Id(4));
  Providers p{{V4(), V6()}, Contacts(3, V4())};
  Providers back = absl::get<Providers>(RoundTrip(Msg(p)).body);
  EXPECT_EQ(back.providers, p.providers);
  EXPECT_EQ(back.closer, p.closer);

  AddProvider add{Keys(3), V6(), absl::Hours(12)};
  AddProvider add_back = absl::get<AddProvider>(RoundTrip(Msg(add)).body);
  EXPECT_EQ(add_back.keys, add.keys);
  EXPECT_EQ(add_back.provider, add.provider);
  EXPECT_EQ(add_back.ttl, absl::Hours(12));

  EXPECT_EQ(absl::get<WithdrawProvider>(
                RoundTrip(Msg(WithdrawProvider{Keys(2)})).body)
                .keys,
            Keys(2));
}

TEST(Codec, BodyNamesMatchWireTypes) {
  EXPECT_EQ(BodyName(Ping{}), "PING");
  EXPECT_EQ(BodyName(WithdrawProvider{}), "WITHDRAW_PROVIDER");
}

TEST(Codec, RejectsWrongOrMissingVersion) {
  wire::Envelope env = ValidWire();
  env.set_version(2);
  ExpectRejected(env, "version: unsupported 2, want 1");
  env.clear_version();
  ExpectRejected(env, "version: unsupported 0");
}

TEST(Codec, RejectsSenderNotExactly32Bytes) {
  wire::Envelope env = ValidWire();
  env.set_sender(std::string(33, 'x'));
  ExpectRejected(env, "sender: node id must be 32 bytes, got 33");
  env.clear_sender();
  ExpectRejected(env, "sender: node id must be 32 bytes, got 0");
}

TEST(Codec, RejectsTargetAndKeyNotExactly32Bytes) {
  wire::Envelope env = ValidWire();
  env.mutable_find_node()->set_target("short");
  ExpectRejected(env, "find_node.target: node id must be 32 bytes, got 5");
  env.mutable_get_providers()->set_key(std::string(31, 'k'));
  ExpectRejected(env, "get_providers.key: node id must be 32 bytes, got 31");
}

TEST(Codec, RejectsBadContactFields) {
  wire::Envelope env = ValidWire();
  auto* list = env.mutable_nodes()->mutable_contacts();
  AddWireContact(list);
  wire::Contact* bad = AddWireContact(list);

  bad->set_id("x");
  ExpectRejected(env, "nodes.contacts[1].id: node id must be 32 bytes, got 1");
  bad->set_id(Id(3).ToBytes());
  bad->set_address("abcde");
  ExpectRejected(env,
                 "nodes.contacts[1]: address must be 4 or 16 bytes, got 5");
  bad->set_address(std::string(16, '\0'));
  ExpectRejected(env, "nodes.contacts[1]: address is unspecified");
  bad->set_address(std::string("\x0a\x00\x00\x02", 4));
  bad->set_port(0);
  ExpectRejected(env, "nodes.contacts[1]: port must be in [1, 65535], got 0");
  bad->set_port(65536);
  ExpectRejected(env, "got 65536");
}

TEST(Codec, RejectsTooManyContactsOrProviders) {
  wire::Envelope env = ValidWire();
  for (size_t i = 0; i <= kMaxContacts; ++i) {
    AddWireContact(env.mutable_nodes()->mutable_contacts());
  }
  ExpectRejected(env, "nodes.contacts: count must be in [0, 20], got 21");

  env = ValidWire();
  for (size_t i = 0; i <= kMaxContacts; ++i) {
    AddWireContact(env.mutable_providers()->mutable_closer());
  }
  ExpectRejected(env, "providers.closer: count must be in [0, 20], got 21");

  env = ValidWire();
  for (size_t i = 0; i <= kMaxProviders; ++i) {
    wire::Endpoint* p = env.mutable_providers()->add_providers();
    p->set_address(std::string("\x0a\x00\x00\x01", 4));
    p->set_port(1);
  }
  ExpectRejected(env, "providers.providers: count must be in [0, 20], got 21");
}

TEST(Codec, RejectsBadProviderEndpoint) {
  wire::Envelope env = ValidWire();
  wire::Endpoint* p = env.mutable_providers()->add_providers();
  p->set_address("abc");
  p->set_port(1);
  ExpectRejected(env, "providers.providers[0]: address must be 4 or 16 bytes");
}

TEST(Codec, RejectsKeyCountsOutsideOneTo32) {
  wire::Envelope env = ValidWire();
  wire::AddProvider* add = ValidAddProvider(env);
  add->clear_keys();
  ExpectRejected(env, "add_provider.keys: count must be in [1, 32], got 0");
  for (int i = 0; i < 33; ++i) add->add_keys(Id(i).ToBytes());
  ExpectRejected(env, "add_provider.keys: count must be in [1, 32], got 33");

  env.mutable_withdraw_provider();
  ExpectRejected(env,
                 "withdraw_provider.keys: count must be in [1, 32], got 0");
  env.mutable_withdraw_provider()->add_keys("tiny");
  ExpectRejected(env, "withdraw_provider.keys[0]: node id must be 32 bytes");
}

TEST(Codec, RejectsBadAddProviderFields) {
  wire::Envelope env = ValidWire();
  wire::AddProvider* add = ValidAddProvider(env);
  add->set_ttl_seconds(0);
  ExpectRejected(env,
                 "add_provider.ttl_seconds: must be in [1, 172800], got 0");
  add->set_ttl_seconds(172801);
  ExpectRejected(env, "got 172801");
  add->set_ttl_seconds(60);
  add->mutable_provider()->set_port(0);
  ExpectRejected(env, "add_provider.provider: port must be in [1, 65535]");
  add->clear_provider();
  ExpectRejected(env, "add_provider.provider: missing");
}

TEST(Codec, RejectsMissingOrUnknownBody) {
  wire::Envelope env = ValidWire();
  env.clear_body();
  ExpectRejected(env, "body: missing or of an unknown type");

  // Field 15, a body type from a future version, arrives as an unknown field.
  std::string bytes = env.SerializeAsString() + std::string("\x7a\x00", 2);
  absl::StatusOr<Message> m = Decode(bytes);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("body: missing"));
}

TEST(Codec, RejectsOversizedDatagramBeforeParsing) {
  // A valid envelope padded with an unknown field past the limit: only the
  // size check can reject it.
  std::string bytes = ValidWire().SerializeAsString();
  bytes += "\x7a";
  bytes += "\x90\x09";  // Length 1168.
  bytes += std::string(1168, 'x');
  ASSERT_TRUE(Decode(bytes, kNoLimit).ok());
  absl::StatusOr<Message> m = Decode(bytes);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(),
              HasSubstr(absl::StrCat("datagram is ", bytes.size(),
                                     " bytes, limit is 1200")));
}

TEST(Codec, RejectsGarbage) {
  absl::StatusOr<Message> m = Decode("\xff\xff\xff");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("not a valid protobuf"));
  EXPECT_THAT(Decode("").status().message(), HasSubstr("version"));
}

TEST(Codec, EncodeRejectsWhatDecodeWould) {
  absl::StatusOr<std::string> bad_ttl =
      Encode(Msg(AddProvider{Keys(1), V4(), absl::Hours(49)}));
  EXPECT_THAT(bad_ttl.status().message(), HasSubstr("ttl_seconds"));
  EXPECT_THAT(Encode(Msg(AddProvider{Keys(1), Endpoint(), absl::Hours(1)}))
                  .status()
                  .message(),
              HasSubstr("add_provider.provider"));
  EXPECT_THAT(Encode(Msg(Nodes{Contacts(21, V4())})).status().message(),
              HasSubstr("count must be in [0, 20]"));
}

TEST(Codec, EncodeEnforcesSizeLimit) {
  Message m = Msg(Nodes{Contacts(20, V6())});
  absl::StatusOr<std::string> bytes = Encode(m);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bytes.status().message(), HasSubstr("limit is 1200"));
  EXPECT_TRUE(Encode(m, kNoLimit).ok());
  EXPECT_TRUE(Encode(Msg(Nodes{Contacts(20, V4())})).ok());
}

TEST(Codec, TrimToFitDropsFarthestContacts) {
  Message m = Msg(Nodes{Contacts(20, V6())});
  TrimToFit(m);
  const std::vector<Contact>& kept = absl::get<Nodes>(m.body).contacts;
  EXPECT_GE(kept.size(), 18u);
  EXPECT_LT(kept.size(), 20u);
  EXPECT_EQ(kept.front().id, Id(1));
  EXPECT_TRUE(Encode(m).ok());
}

TEST(Codec, TrimToFitTrimsProvidersReplyAndLeavesSmallOnesAlone) {
  Message m =
      Msg(Providers{std::vector<Endpoint>(20, V6()), Contacts(20, V6())});
  TrimToFit(m);
  ASSERT_TRUE(Encode(m).ok());
  EXPECT_THAT(absl::get<Providers>(m.body).providers, SizeIs(20));

  Message small = Msg(Nodes{Contacts(2, V4())});
  TrimToFit(small);
  EXPECT_THAT(absl::get<Nodes>(small.body).contacts, SizeIs(2));
}

TEST(Codec, SplitAddProviderStaysUnderLimit) {
  for (size_t max_bytes : {size_t{300}, size_t{700}, kMaxDatagramBytes}) {
    absl::StatusOr<std::vector<AddProvider>> batches =
        SplitAddProvider(Keys(100), V6(), absl::Hours(24), max_bytes);
    ASSERT_TRUE(batches.ok()) << batches.status();
    std::vector<NodeId> all;
    for (const AddProvider& b : *batches) {
      Message m{~uint64_t{0}, Id(0xff), b};
      EXPECT_TRUE(Encode(m, max_bytes).ok()) << max_bytes;
      all.insert(all.end(), b.keys.begin(), b.keys.end());
    }
    EXPECT_EQ(all, Keys(100));
    if (max_bytes == kMaxDatagramBytes) {
      EXPECT_THAT(*batches, SizeIs(4));  // 32 + 32 + 32 + 4.
    }
  }
}

TEST(Codec, SplitAddProviderUsesWholeBudget) {
  // One more key than each batch holds would overflow the limit.
  absl::StatusOr<std::vector<AddProvider>> batches =
      SplitAddProvider(Keys(40), V6(), absl::Hours(1), 500);
  ASSERT_TRUE(batches.ok()) << batches.status();
  AddProvider bigger = batches->front();
  bigger.keys.push_back(Id(0x11));
  EXPECT_FALSE(Encode(Message{~uint64_t{0}, Id(1), bigger}, 500).ok());
}

TEST(Codec, SplitAddProviderRejectsBadInput) {
  EXPECT_THAT(SplitAddProvider({}, V4(), absl::Hours(1)).status().message(),
              HasSubstr("keys: empty"));
  EXPECT_THAT(
      SplitAddProvider(Keys(2), V4(), absl::ZeroDuration()).status().message(),
      HasSubstr("ttl_seconds"));
  EXPECT_THAT(
      SplitAddProvider(Keys(2), V4(), absl::Hours(1), 50).status().message(),
      HasSubstr("limit is 50"));
}

// Feeds random and mutated datagrams to Decode: it must never crash, and
// every failure must be INVALID_ARGUMENT.
TEST(Codec, FuzzDecodeNeverCrashes) {
  std::mt19937_64 gen(20240601);
  std::vector<std::string> seeds;
  for (const Message& m :
       {Msg(Ping{}), Msg(FindNode{Id(3)}), Msg(Nodes{Contacts(5, V6())}),
        Msg(Providers{{V4()}, Contacts(3, V4())}),
        Msg(AddProvider{Keys(4), V4(), absl::Hours(2)}),
        Msg(WithdrawProvider{Keys(2)})}) {
    seeds.push_back(*Encode(m));
  }
  auto byte = [&] { return static_cast<char>(gen() & 0xff); };
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string d;
    if (i % 4 == 0) {
      d.resize(gen() % 1300);
      for (char& c : d) c = byte();
    } else {
      d = seeds[gen() % seeds.size()];
      for (int n = 1 + gen() % 4; n > 0 && !d.empty(); --n) {
        size_t at = gen() % d.size();
        switch (gen() % 4) {
          case 0:
            d[at] = byte();
            break;
          case 1:
            d[at] ^= 1 << (gen() % 8);
            break;
          case 2:
            d.resize(at);
            break;
          case 3:
            d.insert(at, 1, byte());
            break;
        }
      }
    }
    absl::StatusOr<Message> m = Decode(d);
    if (m.ok()) {
      ++accepted;
      continue;
    }
    ASSERT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument)
        << m.status();
  }
  // Some mutations (e.g. in an ID byte) keep the datagram valid.
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace shoal::dht
