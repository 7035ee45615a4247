#include "dht/lookup.h"

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// The target is the zero ID, so the contact with first byte d is at distance
// d * 2^248: a larger d is farther.
const NodeId kTarget;
const NodeId kSelf = [] {
  NodeId::Bytes bytes{};
  bytes[0] = 0xff;
  bytes[31] = 1;
  return NodeId(bytes);
}();

Contact C(uint8_t d) {
  NodeId::Bytes bytes{};
  bytes[0] = d;
  return Contact{NodeId(bytes),
                 *Endpoint::Parse(absl::StrCat("10.0.1.", d, ":4000"))};
}

std::vector<Contact> Cs(std::vector<uint8_t> ds) {
  std::vector<Contact> out;
  for (uint8_t d : ds) out.push_back(C(d));
  return out;
}

Endpoint Provider(int host) {
  return *Endpoint::Parse(absl::StrCat("10.0.2.", host, ":5000"));
}

std::vector<uint8_t> Ds(const std::vector<Contact>& contacts) {
  std::vector<uint8_t> out;
  for (const Contact& c : contacts) out.push_back(c.id.bytes()[0]);
  return out;
}

LookupOptions Small(size_t enough_providers = 0) {
  LookupOptions options;
  options.k = 4;
  options.alpha = 2;
  options.enough_providers = enough_providers;
  return options;
}

// Answers every query at once: contact d knows the 4 contacts d/2 .. d/2 + 3,
// so each hop halves the distance, until d = 1.
void RunHalvingWorld(Lookup& lookup) {
  for (int round = 0; round < 100 && !lookup.done(); ++round) {
    for (const Contact& c : lookup.NextToQuery()) {
      uint8_t d = c.id.bytes()[0];
      uint8_t half = d / 2 == 0 ? 1 : d / 2;
      lookup.OnReply(c.id, Cs({half, uint8_t(half + 1), uint8_t(half + 2),
                               uint8_t(half + 3)}));
    }
  }
}

TEST(Lookup, ConvergesToKClosest) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({200, 201, 202, 203}));
  RunHalvingWorld(lookup);
  ASSERT_TRUE(lookup.done());
  EXPECT_EQ(Ds(lookup.Closest()), (std::vector<uint8_t>{1, 2, 3, 4}));
  EXPECT_EQ(lookup.in_flight(), 0u);
  EXPECT_THAT(lookup.NextToQuery(), IsEmpty());
}

TEST(Lookup, QueriesAtMostAlphaClosestFirst) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({30, 10, 20, 40}));
  EXPECT_EQ(Ds(lookup.NextToQuery()), (std::vector<uint8_t>{10, 20}));
  EXPECT_THAT(lookup.NextToQuery(), IsEmpty());
  ASSERT_TRUE(lookup.OnReply(C(10).id, {}));
  EXPECT_EQ(Ds(lookup.NextToQuery()), (std::vector<uint8_t>{30}));
}

TEST(Lookup, IgnoresDuplicatesAndSelf) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({10, 10, 20}));
  lookup.AddSeeds({Contact{kSelf, C(1).endpoint}});
  EXPECT_EQ(Ds(lookup.NextToQuery()), (std::vector<uint8_t>{10, 20}));
  ASSERT_TRUE(lookup.OnReply(C(10).id, Cs({5, 5, 20, 10})));
  // A second reply from the same contact, or one nobody asked, is ignored.
  EXPECT_FALSE(lookup.OnReply(C(10).id, Cs({1})));
  EXPECT_FALSE(lookup.OnReply(C(99).id, Cs({1})));
  EXPECT_EQ(Ds(lookup.NextToQuery()), (std::vector<uint8_t>{5}));
  EXPECT_EQ(lookup.queried(), 3u);
}

TEST(Lookup, FailedContactsAreReplacedByFartherOnes) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({1, 2, 3, 4, 5, 6}));
  for (int i = 0; i < 10 && !lookup.done(); ++i) {
    for (const Contact& c : lookup.NextToQuery()) {
      uint8_t d = c.id.bytes()[0];
      if (d % 2 == 1) {
        ASSERT_TRUE(lookup.OnFailure(c.id));
      } else {
        ASSERT_TRUE(lookup.OnReply(c.id, {}));
      }
    }
  }
  ASSERT_TRUE(lookup.done());
  EXPECT_EQ(Ds(lookup.Closest()), (std::vector<uint8_t>{2, 4, 6}));
  EXPECT_FALSE(lookup.OnFailure(C(1).id));
}

TEST(Lookup, AllFailedFinishesEmpty) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({1, 2}));
  for (const Contact& c : lookup.NextToQuery()) lookup.OnFailure(c.id);
  EXPECT_TRUE(lookup.done());
  EXPECT_THAT(lookup.Closest(), IsEmpty());
}

TEST(Lookup, NoSeedsIsDoneAtOnce) {
  Lookup lookup(kSelf, kTarget, Small());
  EXPECT_TRUE(lookup.done());
  EXPECT_THAT(lookup.NextToQuery(), IsEmpty());
}

TEST(Lookup, SlowContactFreesItsSlotButItsReplyCounts) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({10, 20, 30}));
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(2));
  ASSERT_TRUE(lookup.OnSlow(C(10).id));
  EXPECT_FALSE(lookup.OnSlow(C(10).id));
  EXPECT_EQ(Ds(lookup.NextToQuery()), (std::vector<uint8_t>{30}));
  EXPECT_EQ(lookup.in_flight(), 3u);
  ASSERT_TRUE(lookup.OnReply(C(20).id, {}));
  ASSERT_TRUE(lookup.OnReply(C(30).id, {}));
  // The slow contact is among the k closest, so the lookup waits for it.
  EXPECT_FALSE(lookup.done());
  ASSERT_TRUE(lookup.OnReply(C(10).id, Cs({1})));
  EXPECT_EQ(Ds(lookup.NextToQuery()), (std::vector<uint8_t>{1}));
}

TEST(Lookup, SlowContactThatFailsIsDropped) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({10}));
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(1));
  ASSERT_TRUE(lookup.OnSlow(C(10).id));
  ASSERT_TRUE(lookup.OnFailure(C(10).id));
  EXPECT_TRUE(lookup.done());
  EXPECT_EQ(lookup.in_flight(), 0u);
}

TEST(Lookup, WithoutWaitForSlowEndsWhenOnlySlowContactsRemain) {
  // A provider lookup for a missing key must not wait out the hard timeout
  // of a lost request once everything else has answered.
  LookupOptions options = Small();
  options.wait_for_slow = false;
  Lookup lookup(kSelf, kTarget, options);
  lookup.AddSeeds(Cs({10, 20, 30}));
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(2));
  ASSERT_TRUE(lookup.OnSlow(C(10).id));
  EXPECT_EQ(Ds(lookup.NextToQuery()), (std::vector<uint8_t>{30}));
  ASSERT_TRUE(lookup.OnReply(C(20).id, {}));
  EXPECT_FALSE(lookup.done());
  ASSERT_TRUE(lookup.OnReply(C(30).id, {}));
  EXPECT_TRUE(lookup.done());
  EXPECT_THAT(lookup.NextToQuery(), IsEmpty());
}

TEST(Lookup, StopsEarlyWhenEnoughProviders) {
  Lookup lookup(kSelf, kTarget, Small(/*enough_providers=*/2));
  lookup.AddSeeds(Cs({10, 20, 30}));
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(2));
  ASSERT_TRUE(lookup.OnReply(C(10).id, Cs({1}), {Provider(1)}));
  EXPECT_FALSE(lookup.done());
  ASSERT_TRUE(lookup.OnReply(C(20).id, {}, {Provider(1), Provider(2)}));
  EXPECT_TRUE(lookup.done());
  EXPECT_THAT(lookup.providers(), ElementsAre(Provider(1), Provider(2)));
  EXPECT_THAT(lookup.NextToQuery(), IsEmpty());
}

TEST(Lookup, WithoutEarlyStopCollectsProvidersUntilConverged) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({10}));
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(1));
  ASSERT_TRUE(lookup.OnReply(C(10).id, Cs({5}), {Provider(1), Provider(2)}));
  EXPECT_FALSE(lookup.done());
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(1));
  ASSERT_TRUE(lookup.OnReply(C(5).id, {}, {Provider(2), Provider(3)}));
  EXPECT_TRUE(lookup.done());
  EXPECT_THAT(lookup.providers(),
              ElementsAre(Provider(1), Provider(2), Provider(3)));
}

TEST(Lookup, CountsHops) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({200, 201, 202, 203}));
  RunHalvingWorld(lookup);
  // 200 -> 100 -> 50 -> 25 -> 12 -> 6 -> 3 -> 1: seeds are hop 1, and the
  // contact at distance 1 (first listed by 3, 2 and 1 itself) is hop 8.
  EXPECT_EQ(lookup.hops(), 8);
}

TEST(Lookup, HopsCountTheFirstReplyWithProviders) {
  Lookup lookup(kSelf, kTarget, Small());
  lookup.AddSeeds(Cs({40}));
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(1));
  ASSERT_TRUE(lookup.OnReply(C(40).id, Cs({20})));
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(1));
  ASSERT_TRUE(lookup.OnReply(C(20).id, Cs({10}), {Provider(1)}));
  ASSERT_THAT(lookup.NextToQuery(), SizeIs(1));
  ASSERT_TRUE(lookup.OnReply(C(10).id, {}, {Provider(2)}));
  EXPECT_EQ(lookup.hops(), 2);
}

TEST(Lookup, LocalProvidersAreZeroHops) {
  Lookup lookup(kSelf, kTarget, Small(/*enough_providers=*/1));
  lookup.AddLocalProviders({Provider(1)});
  EXPECT_TRUE(lookup.done());
  EXPECT_EQ(lookup.hops(), 0);
}

}  // namespace
}  // namespace shoal::dht
