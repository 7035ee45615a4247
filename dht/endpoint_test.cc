#include "dht/endpoint.h"

#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

using ::testing::HasSubstr;

void ExpectInvalid(absl::string_view text, absl::string_view what) {
  absl::StatusOr<Endpoint> e = Endpoint::Parse(text);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << text;
  EXPECT_THAT(e.status().message(), HasSubstr(std::string(what))) << text;
}

TEST(Endpoint, ParsesAndFormatsIpv4) {
  absl::StatusOr<Endpoint> e = Endpoint::Parse("10.0.0.7:4001");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->family(), Endpoint::Family::kIpv4);
  EXPECT_EQ(e->port(), 4001);
  EXPECT_EQ(e->AddressBytes(), std::string("\x0a\x00\x00\x07", 4));
  EXPECT_EQ(e->ToString(), "10.0.0.7:4001");
}

TEST(Endpoint, ParsesAndFormatsIpv6) {
  absl::StatusOr<Endpoint> e = Endpoint::Parse("[2001:DB8::1]:65535");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->family(), Endpoint::Family::kIpv6);
  EXPECT_EQ(e->port(), 65535);
  EXPECT_EQ(e->AddressBytes().size(), 16u);
  EXPECT_EQ(e->ToString(), "[2001:db8::1]:65535");
}

TEST(Endpoint, RejectsMalformedText) {
  ExpectInvalid("10.0.0.7", "lacks ':port'");
  ExpectInvalid("[::1", "without ']'");
  ExpectInvalid("[::1]4001", "lacks ':port' after ']'");
  ExpectInvalid("::1:4001", "need [brackets]");
  ExpectInvalid("10.0.0.7:", "not a decimal number");
  ExpectInvalid("10.0.0.7:+5", "not a decimal number");
  ExpectInvalid("10.0.0.7:http", "not a decimal number");
  ExpectInvalid("10.0.0.300:1", "invalid IPv4 address \"10.0.0.300\"");
  ExpectInvalid("[::g]:1", "invalid IPv6 address");
  ExpectInvalid("localhost:1", "invalid IPv4 address");
}

TEST(Endpoint, RejectsPortOutOfRange) {
  ExpectInvalid("10.0.0.7:0", "port must be in [1, 65535], got 0");
  ExpectInvalid("10.0.0.7:65536", "got 65536");
  ExpectInvalid("10.0.0.7:99999999999", "not a decimal number");
}

TEST(Endpoint, RejectsUnspecifiedAddress) {
  ExpectInvalid("0.0.0.0:1", "unspecified");
  ExpectInvalid("[::]:1", "unspecified");
}

TEST(Endpoint, FromBytesChecksAddressLength) {
  absl::StatusOr<Endpoint> e = Endpoint::FromBytes("abcde", 1);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(e.status().message(), HasSubstr("4 or 16 bytes, got 5"));
}

TEST(Endpoint, BytesRoundTrip) {
  Endpoint e = *Endpoint::Parse("[fe80::1:2]:9");
  absl::StatusOr<Endpoint> back = Endpoint::FromBytes(e.AddressBytes(), 9);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, e);
}

TEST(Endpoint, EqualityAndHashCoverFamilyAddressAndPort) {
  absl::flat_hash_set<Endpoint> set = {
      *Endpoint::Parse("1.2.3.4:5"), *Endpoint::Parse("1.2.3.4:6"),
      *Endpoint::Parse("[::ffff:1.2.3.4]:5"), *Endpoint::Parse("1.2.3.4:5")};
  EXPECT_EQ(set.size(), 3u);
}

}  // namespace
}  // namespace shoal::dht
