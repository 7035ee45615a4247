#include "dht/node_id.h"

#include <random>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

using ::testing::HasSubstr;

constexpr char kHexA[] =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

NodeId IdWithFirstByte(uint8_t first) {
  NodeId::Bytes bytes{};
  bytes[0] = first;
  return NodeId(bytes);
}

TEST(NodeId, DefaultIsZero) {
  EXPECT_EQ(NodeId().ToHex(), std::string(64, '0'));
}

TEST(NodeId, HexRoundTrip) {
  absl::StatusOr<NodeId> id = NodeId::FromHex(kHexA);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->ToHex(), kHexA);
  EXPECT_EQ(id->ShortHex(), "00112233");
  EXPECT_EQ(id->bytes()[1], 0x11);
}

TEST(NodeId, FromHexAcceptsUpperCase) {
  absl::StatusOr<NodeId> id = NodeId::FromHex(std::string(64, 'F'));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->ToHex(), std::string(64, 'f'));
}

TEST(NodeId, FromHexRejectsWrongLength) {
  absl::StatusOr<NodeId> id = NodeId::FromHex("abc");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(id.status().message(), HasSubstr("64 characters, got 3"));
}

TEST(NodeId, FromHexNamesBadCharacterAndPosition) {
  std::string hex(64, '0');
  hex[17] = 'g';
  absl::StatusOr<NodeId> id = NodeId::FromHex(hex);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(id.status().message(), HasSubstr("'g' at position 17"));
}

TEST(NodeId, FromHexEscapesUnprintableCharacter) {
  std::string hex(64, '0');
  hex[0] = '\n';
  EXPECT_THAT(NodeId::FromHex(hex).status().message(),
              HasSubstr("'\\n' at position 0"));
}

TEST(NodeId, BytesRoundTripAndLengthCheck) {
  NodeId id = NodeId::ForKey("x");
  absl::StatusOr<NodeId> back = NodeId::FromBytes(id.ToBytes());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, id);

  absl::StatusOr<NodeId> short_id = NodeId::FromBytes(std::string(31, 'a'));
  EXPECT_EQ(short_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_id.status().message(), HasSubstr("32 bytes, got 31"));
}

TEST(NodeId, ForKeyIsSha256) {
  // SHA-256("abc") from FIPS 180-2, appendix B.1.
  EXPECT_EQ(NodeId::ForKey("abc").ToHex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(NodeId, RandomIsDeterministicForSeededGenerator) {
  std::mt19937_64 gen1(7), gen2(7);
  NodeId a = NodeId::Random(gen1);
  EXPECT_EQ(a, NodeId::Random(gen2));
  EXPECT_NE(a, NodeId::Random(gen1));
}

TEST(NodeId, OrderingIsNumericBigEndian) {
  EXPECT_LT(IdWithFirstByte(0x01), IdWithFirstByte(0x80));
  EXPECT_GT(IdWithFirstByte(0x80), IdWithFirstByte(0x01));
  EXPECT_LE(IdWithFirstByte(0x01), IdWithFirstByte(0x01));
  EXPECT_GE(IdWithFirstByte(0x02), IdWithFirstByte(0x01));
  EXPECT_NE(IdWithFirstByte(0x01), IdWithFirstByte(0x02));
}

TEST(NodeId, HashesWithAbsl) {
  absl::flat_hash_set<NodeId> set = {IdWithFirstByte(1), IdWithFirstByte(2),
                                     IdWithFirstByte(1)};
  EXPECT_EQ(set.size(), 2u);
  EXPECT_TRUE(set.contains(IdWithFirstByte(2)));
}

TEST(NodeId, DistanceIsXorAndSymmetric) {
  NodeId a = IdWithFirstByte(0b1100'0000);
  NodeId b = IdWithFirstByte(0b1010'0000);
  EXPECT_EQ(Distance(a, b), IdWithFirstByte(0b0110'0000));
  EXPECT_EQ(Distance(a, b), Distance(b, a));
  EXPECT_EQ(Distance(a, a), NodeId());
}

TEST(NodeId, CommonPrefixLengthCountsLeadingEqualBits) {
  NodeId zero;
  EXPECT_EQ(CommonPrefixLength(zero, zero), 256);
  EXPECT_EQ(CommonPrefixLength(zero, IdWithFirstByte(0x80)), 0);
  EXPECT_EQ(CommonPrefixLength(zero, IdWithFirstByte(0x01)), 7);
  NodeId::Bytes last{};
  last[31] = 0x01;
  EXPECT_EQ(CommonPrefixLength(zero, NodeId(last)), 255);
}

TEST(NodeId, BucketIndexIsLog2OfDistance) {
  NodeId zero;
  EXPECT_EQ(BucketIndex(zero, IdWithFirstByte(0x80)), 255);
  EXPECT_EQ(BucketIndex(zero, IdWithFirstByte(0x01)), 248);
  NodeId::Bytes last{};
  last[31] = 0x01;
  EXPECT_EQ(BucketIndex(zero, NodeId(last)), 0);
}

TEST(NodeId, BitCountsFromMostSignificant) {
  NodeId id = IdWithFirstByte(0b1000'0001);
  EXPECT_TRUE(id.Bit(0));
  EXPECT_FALSE(id.Bit(1));
  EXPECT_TRUE(id.Bit(7));
  EXPECT_FALSE(id.Bit(255));
}

TEST(NodeId, CloserToUsesXorNotNumericDistance) {
  // Numerically 0x7f is nearer to 0x80 than 0xff is, but by XOR 0xff shares
  // the top bit and is closer.
  NodeId target = IdWithFirstByte(0x80);
  EXPECT_TRUE(CloserTo(target, IdWithFirstByte(0xff), IdWithFirstByte(0x7f)));
  EXPECT_FALSE(CloserTo(target, IdWithFirstByte(0x7f), IdWithFirstByte(0xff)));
  EXPECT_FALSE(CloserTo(target, target, target));
}

}  // namespace
}  // namespace shoal::dht
