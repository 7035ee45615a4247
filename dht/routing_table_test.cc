#include "dht/routing_table.h"

#include <cstdint>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Self is the zero ID, so an ID whose first byte has the top bit set lands in
// bucket 255, one whose first byte is 0x01 in bucket 248.
NodeId Id(uint8_t first, uint8_t last = 0) {
  NodeId::Bytes bytes{};
  bytes[0] = first;
  bytes[31] = last;
  return NodeId(bytes);
}

Contact C(uint8_t first, uint8_t last = 0) {
  return Contact{Id(first, last), *Endpoint::Parse(absl::StrCat(
                                      "10.0.", first, ".", last, ":4000"))};
}

class RoutingTableTest : public ::testing::Test {
 protected:
  RoutingTableTest() : table_(NodeId(), Options()) {}

  static RoutingTableOptions Options() {
    RoutingTableOptions options;
    options.bucket_size = 3;
    options.replacement_cache_size = 2;
    options.max_failures = 3;
    return options;
  }

  ObserveOutcome See(const Contact& c) {
    now_ += absl::Seconds(1);
    return table_.Observe(c, now_);
  }
  // Fills bucket 255 with 0x80, 0x81, 0x82, seen in that order.
  void FillTopBucket() {
    for (uint8_t b = 0x80; b < 0x83; ++b) {
      ASSERT_EQ(See(C(b)).result, ObserveResult::kAdded);
    }
  }
  std::vector<NodeId> TopBucketIds() const {
    std::vector<NodeId> ids;
    for (const Contact& c : table_.BucketContacts(255)) ids.push_back(c.id);
    return ids;
  }

  absl::Time now_ = absl::FromUnixSeconds(1000);
  RoutingTable table_;
};

TEST_F(RoutingTableTest, NeverStoresSelf) {
  EXPECT_EQ(See(Contact{NodeId(), *Endpoint::Parse("1.1.1.1:1")}).result,
            ObserveResult::kSelf);
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_FALSE(table_.Contains(NodeId()));
  EXPECT_FALSE(table_.RecordFailure(NodeId()));
}

TEST_F(RoutingTableTest, FilesContactsByBucketIndex) {
  See(C(0x80));
  See(C(0x01));
  EXPECT_THAT(table_.BucketContacts(255), ElementsAre(C(0x80)));
  EXPECT_THAT(table_.BucketContacts(248), ElementsAre(C(0x01)));
  EXPECT_EQ(table_.size(), 2u);
}

TEST_F(RoutingTableTest, KeepsLeastRecentlySeenFirst) {
  FillTopBucket();
  EXPECT_EQ(See(C(0x80)).result, ObserveResult::kRefreshed);
  EXPECT_THAT(TopBucketIds(), ElementsAre(Id(0x81), Id(0x82), Id(0x80)));
}

TEST_F(RoutingTableTest, FullBucketOffersLeastRecentlySeenForPing) {
  FillTopBucket();
  ObserveOutcome out = See(C(0x90));
  EXPECT_EQ(out.result, ObserveResult::kBucketFull);
  ASSERT_TRUE(out.ping_candidate.has_value());
  EXPECT_EQ(*out.ping_candidate, C(0x80));
  EXPECT_FALSE(table_.Contains(Id(0x90)));
  EXPECT_THAT(table_.ReplacementContacts(255), ElementsAre(C(0x90)));
}

TEST_F(RoutingTableTest, OffersOnePingCandidateAtATime) {
  FillTopBucket();
  EXPECT_TRUE(See(C(0x90)).ping_candidate.has_value());
  EXPECT_FALSE(See(C(0x91)).ping_candidate.has_value());
}

TEST_F(RoutingTableTest, SuccessfulPingMovesCandidateToTail) {
  FillTopBucket();
  See(C(0x90));
  EXPECT_EQ(See(C(0x80)).result, ObserveResult::kRefreshed);
  EXPECT_THAT(TopBucketIds(), ElementsAre(Id(0x81), Id(0x82), Id(0x80)));
  EXPECT_THAT(table_.ReplacementContacts(255), ElementsAre(C(0x90)));
}

TEST_F(RoutingTableTest, EvictsStaleContactOnlyAfterFailedPing) {
  FillTopBucket();
  See(C(0x90));
  EXPECT_TRUE(table_.Contains(Id(0x80)));

  EXPECT_TRUE(table_.RecordFailure(Id(0x80)));
  EXPECT_FALSE(table_.Contains(Id(0x80)));
  EXPECT_THAT(TopBucketIds(), ElementsAre(Id(0x81), Id(0x82), Id(0x90)));
  EXPECT_THAT(table_.ReplacementContacts(255), IsEmpty());
}

TEST_F(RoutingTableTest, PromotesMostRecentlySeenReplacement) {
  FillTopBucket();
  See(C(0x90));
  See(C(0x91));
  table_.RecordFailure(Id(0x80));
  EXPECT_TRUE(table_.Contains(Id(0x91)));
  EXPECT_THAT(table_.ReplacementContacts(255), ElementsAre(C(0x90)));
}

TEST_F(RoutingTableTest, ReplacementCacheDropsOldestWhenFull) {
  FillTopBucket();
  See(C(0x90));
  See(C(0x91));
  See(C(0x92));
  EXPECT_THAT(table_.ReplacementContacts(255), ElementsAre(C(0x92), C(0x91)));
}

TEST_F(RoutingTableTest, RemovesContactAfterMaxConsecutiveFailures) {
  See(C(0x80));
  EXPECT_FALSE(table_.RecordFailure(Id(0x80)));
  EXPECT_FALSE(table_.RecordFailure(Id(0x80)));
  EXPECT_TRUE(table_.RecordFailure(Id(0x80)));
  EXPECT_FALSE(table_.Contains(Id(0x80)));
  EXPECT_EQ(table_.size(), 0u);
}

TEST_F(RoutingTableTest, SuccessResetsFailureCount) {
  See(C(0x80));
  table_.RecordFailure(Id(0x80));
  table_.RecordFailure(Id(0x80));
  See(C(0x80));
  EXPECT_FALSE(table_.RecordFailure(Id(0x80)));
  EXPECT_FALSE(table_.RecordFailure(Id(0x80)));
  EXPECT_TRUE(table_.Contains(Id(0x80)));
}

TEST_F(RoutingTableTest, PromotedContactIsOrderedByLastSeen) {
  FillTopBucket();
  See(C(0x90));  // Seen before the refreshes below.
  See(C(0x81));
  See(C(0x82));
  for (int i = 0; i < 3; ++i) table_.RecordFailure(Id(0x80));
  EXPECT_THAT(TopBucketIds(), ElementsAre(Id(0x90), Id(0x81), Id(0x82)));
}

TEST_F(RoutingTableTest, FailedReplacementIsForgotten) {
  FillTopBucket();
  See(C(0x90));
  EXPECT_FALSE(table_.RecordFailure(Id(0x90)));
  EXPECT_THAT(table_.ReplacementContacts(255), IsEmpty());
}

TEST_F(RoutingTableTest, IgnoresKnownIdAtNewEndpoint) {
  See(C(0x80));
  Contact moved{Id(0x80), *Endpoint::Parse("[2001:db8::1]:5")};
  EXPECT_EQ(See(moved).result, ObserveResult::kEndpointConflict);
  EXPECT_THAT(table_.BucketContacts(255), ElementsAre(C(0x80)));
}

TEST_F(RoutingTableTest, ReplacementLeavesCacheWhenBucketHasRoom) {
  FillTopBucket();
  See(C(0x90));
  for (int i = 0; i < 3; ++i) table_.RecordFailure(Id(0x81));  // Promotes 0x90.
  See(C(0x91));                                                // Cached.
  for (int i = 0; i < 3; ++i) table_.RecordFailure(Id(0x82));  // Promotes 0x91.
  for (int i = 0; i < 3; ++i) table_.RecordFailure(Id(0x80));  // Cache empty.
  EXPECT_EQ(See(C(0x93)).result, ObserveResult::kAdded);
  EXPECT_EQ(table_.size(), 3u);
}

TEST_F(RoutingTableTest, FindClosestSortsByXorDistance) {
  See(C(0x80));
  See(C(0x01));
  See(C(0x03));
  See(C(0xc0));
  EXPECT_THAT(table_.FindClosest(Id(0x02), 3),
              ElementsAre(C(0x03), C(0x01), C(0x80)));
  EXPECT_THAT(table_.FindClosest(Id(0xc1), 10),
              ElementsAre(C(0xc0), C(0x80), C(0x01), C(0x03)));
  EXPECT_THAT(table_.FindClosest(Id(0xc1), 0), IsEmpty());
}

TEST(RoutingTable, FindClosestMatchesBruteForceOnRandomIds) {
  std::mt19937_64 gen(11);
  RoutingTable table(NodeId::Random(gen));
  std::vector<NodeId> stored;
  absl::Time now = absl::FromUnixSeconds(1);
  for (int i = 0; i < 500; ++i) {
    Contact c{NodeId::Random(gen), *Endpoint::Parse("10.1.1.1:9")};
    if (table.Observe(c, now).result == ObserveResult::kAdded) {
      stored.push_back(c.id);
    }
  }
  ASSERT_EQ(table.size(), stored.size());
  NodeId target = NodeId::Random(gen);
  std::sort(
      stored.begin(), stored.end(),
      [&](const NodeId& a, const NodeId& b) { return CloserTo(target, a, b); });
  std::vector<Contact> closest = table.FindClosest(target, 20);
  ASSERT_EQ(closest.size(), 20u);
  for (size_t i = 0; i < closest.size(); ++i) {
    EXPECT_EQ(closest[i].id, stored[i]) << "rank " << i;
  }
}

}  // namespace
}  // namespace shoal::dht
