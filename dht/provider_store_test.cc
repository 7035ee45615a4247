#include "dht/provider_store.h"

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

NodeId Id(uint8_t b) {
  NodeId::Bytes bytes;
  bytes.fill(b);
  return NodeId(bytes);
}

Endpoint Ep(int host) {
  return *Endpoint::Parse(absl::StrCat("10.0.0.", host, ":5000"));
}

class ProviderStoreTest : public ::testing::Test {
 protected:
  ProviderStoreTest() : store_(Options()) {}

  static ProviderStoreOptions Options() {
    ProviderStoreOptions options;
    options.max_providers_per_key = 3;
    options.max_records = 5;
    options.max_ttl = absl::Hours(1);
    return options;
  }

  // Provider `p` (ID Id(p), endpoint 10.0.0.p) announces `key` at now_.
  absl::StatusOr<AddProviderResult> Add(
      const NodeId& key, uint8_t p, absl::Duration ttl = absl::Minutes(10)) {
    return store_.Add(key, Id(p), Ep(p), ttl, now_);
  }
  std::vector<NodeId> Providers(const NodeId& key, size_t max = 20) const {
    std::vector<NodeId> ids;
    for (const ProviderRecord& r : store_.Get(key, now_, max)) {
      ids.push_back(r.provider_id);
    }
    return ids;
  }
  void AdvanceTime(absl::Duration d) { now_ += d; }

  const NodeId key_ = NodeId::ForKey("sha256:aaaa");
  const NodeId other_key_ = NodeId::ForKey("sha256:bbbb");
  absl::Time now_ = absl::FromUnixSeconds(1000000);
  ProviderStore store_;
};

TEST_F(ProviderStoreTest, AddThenGet) {
  EXPECT_EQ(*Add(key_, 1), AddProviderResult::kAdded);
  std::vector<ProviderRecord> got = store_.Get(key_, now_);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].provider_id, Id(1));
  EXPECT_EQ(got[0].endpoint, Ep(1));
  EXPECT_EQ(got[0].refreshed, now_);
  EXPECT_EQ(got[0].expires, now_ + absl::Minutes(10));
  EXPECT_THAT(Providers(other_key_), IsEmpty());
}

TEST_F(ProviderStoreTest, LiveUntilJustBeforeExpiry) {
  Add(key_, 1, absl::Seconds(60));
  AdvanceTime(absl::Seconds(60) - absl::Nanoseconds(1));
  EXPECT_THAT(Providers(key_), ElementsAre(Id(1)));
}

TEST_F(ProviderStoreTest, GoneExactlyAtExpiry) {
  Add(key_, 1, absl::Seconds(60));
  AdvanceTime(absl::Seconds(60));
  EXPECT_THAT(Providers(key_), IsEmpty());
  EXPECT_EQ(store_.ExpireAll(now_), 1u);
  EXPECT_EQ(store_.size(), 0u);
  EXPECT_EQ(store_.key_count(), 0u);
}

TEST_F(ProviderStoreTest, RefreshExtendsExpiry) {
  Add(key_, 1, absl::Seconds(60));
  AdvanceTime(absl::Seconds(50));
  EXPECT_EQ(*Add(key_, 1, absl::Seconds(60)), AddProviderResult::kRefreshed);
  AdvanceTime(absl::Seconds(59));  // 109 s after the first Add.
  EXPECT_THAT(Providers(key_), ElementsAre(Id(1)));
  AdvanceTime(absl::Seconds(1));
  EXPECT_THAT(Providers(key_), IsEmpty());
  EXPECT_EQ(store_.size(), 1u);  // Not freed until ExpireAll or Add.
}

TEST_F(ProviderStoreTest, RefreshReplacesEndpointWithoutDuplicating) {
  Add(key_, 1);
  ASSERT_TRUE(store_.Add(key_, Id(1), Ep(9), absl::Minutes(1), now_).ok());
  std::vector<ProviderRecord> got = store_.Get(key_, now_);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].endpoint, Ep(9));
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(ProviderStoreTest, TtlIsCappedAtMax) {
  Add(key_, 1, absl::Hours(48));
  EXPECT_EQ(store_.Get(key_, now_)[0].expires, now_ + absl::Hours(1));
}

TEST_F(ProviderStoreTest, RejectsNonPositiveTtl) {
  EXPECT_EQ(Add(key_, 1, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Add(key_, 1, absl::Seconds(-1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_.size(), 0u);
  EXPECT_EQ(store_.key_count(), 0u);
}

TEST_F(ProviderStoreTest, GetReturnsFreshestFirstUpToMax) {
  Add(key_, 1);
  AdvanceTime(absl::Seconds(1));
  Add(key_, 2);
  AdvanceTime(absl::Seconds(1));
  Add(key_, 3);
  AdvanceTime(absl::Seconds(1));
  Add(key_, 1);  // Refreshing makes 1 the freshest.
  EXPECT_THAT(Providers(key_), ElementsAre(Id(1), Id(3), Id(2)));
  EXPECT_THAT(Providers(key_, 2), ElementsAre(Id(1), Id(3)));
  EXPECT_THAT(Providers(key_, 0), IsEmpty());
}

TEST_F(ProviderStoreTest, GetSkipsExpiredAmongLive) {
  Add(key_, 1, absl::Seconds(10));
  Add(key_, 2, absl::Seconds(30));
  AdvanceTime(absl::Seconds(20));
  EXPECT_THAT(Providers(key_), ElementsAre(Id(2)));
}

TEST_F(ProviderStoreTest, WithdrawRemovesOnlyThatProvider) {
  Add(key_, 1);
  Add(key_, 2);
  Add(other_key_, 1);
  EXPECT_TRUE(store_.Withdraw(key_, Id(1)));
  EXPECT_THAT(Providers(key_), ElementsAre(Id(2)));
  EXPECT_THAT(Providers(other_key_), ElementsAre(Id(1)));
  EXPECT_EQ(store_.size(), 2u);
}

TEST_F(ProviderStoreTest, WithdrawUnknownReturnsFalse) {
  Add(key_, 1);
  EXPECT_FALSE(store_.Withdraw(key_, Id(2)));
  EXPECT_FALSE(store_.Withdraw(other_key_, Id(1)));
  EXPECT_TRUE(store_.Withdraw(key_, Id(1)));
  EXPECT_FALSE(store_.Withdraw(key_, Id(1)));
  EXPECT_EQ(store_.key_count(), 0u);
}

TEST_F(ProviderStoreTest, FullKeyRejectsNewcomerButAcceptsRefresh) {
  for (uint8_t p = 1; p <= 3; ++p) ASSERT_TRUE(Add(key_, p).ok());
  EXPECT_EQ(Add(key_, 4).status().code(), absl::StatusCode::kResourceExhausted);
  AdvanceTime(absl::Seconds(1));
  EXPECT_EQ(*Add(key_, 2), AddProviderResult::kRefreshed);
  EXPECT_EQ(*Add(other_key_, 4), AddProviderResult::kAdded);
  EXPECT_THAT(Providers(key_), ElementsAre(Id(2), Id(1), Id(3)));
}

TEST_F(ProviderStoreTest, FullKeyFreesExpiredRecordsBeforeRejecting) {
  Add(key_, 1, absl::Seconds(5));
  Add(key_, 2);
  Add(key_, 3);
  AdvanceTime(absl::Seconds(5));
  EXPECT_EQ(*Add(key_, 4), AddProviderResult::kAdded);
  EXPECT_EQ(store_.size(), 3u);
}

TEST_F(ProviderStoreTest, FullStoreRejectsNewRecords) {
  std::vector<NodeId> keys;
  for (int i = 0; i < 6; ++i) keys.push_back(NodeId::ForKey(absl::StrCat(i)));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Add(keys[i], 1).ok());
  EXPECT_EQ(Add(keys[5], 1).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store_.key_count(), 5u);  // The rejected key left no entry.
  EXPECT_EQ(*Add(keys[0], 1), AddProviderResult::kRefreshed);
  store_.Withdraw(keys[0], Id(1));
  EXPECT_EQ(*Add(keys[5], 1), AddProviderResult::kAdded);
}

TEST_F(ProviderStoreTest, RemoveProviderDropsAllItsRecords) {
  Add(key_, 1);
  Add(key_, 2);
  Add(other_key_, 1);
  EXPECT_EQ(store_.RemoveProvider(Id(1)), 2u);
  EXPECT_THAT(Providers(key_), ElementsAre(Id(2)));
  EXPECT_THAT(Providers(other_key_), IsEmpty());
  EXPECT_EQ(store_.size(), 1u);
  EXPECT_EQ(store_.key_count(), 1u);
  EXPECT_EQ(store_.RemoveProvider(Id(1)), 0u);
}

TEST_F(ProviderStoreTest, ExpireAllFreesOnlyExpired) {
  Add(key_, 1, absl::Seconds(10));
  Add(key_, 2, absl::Seconds(20));
  Add(other_key_, 3, absl::Seconds(10));
  AdvanceTime(absl::Seconds(10));
  EXPECT_EQ(store_.ExpireAll(now_), 2u);
  EXPECT_EQ(store_.size(), 1u);
  EXPECT_EQ(store_.key_count(), 1u);
  EXPECT_THAT(Providers(key_), ElementsAre(Id(2)));
}

TEST_F(ProviderStoreTest, RecordsOfCountsThroughEveryRemoval) {
  Add(key_, 1, absl::Seconds(10));
  Add(other_key_, 1);
  Add(key_, 1, absl::Seconds(10));  // A refresh is not a new record.
  Add(key_, 2);
  EXPECT_EQ(store_.RecordsOf(Id(1)), 2u);
  EXPECT_TRUE(store_.Withdraw(other_key_, Id(1)));
  EXPECT_EQ(store_.RecordsOf(Id(1)), 1u);
  AdvanceTime(absl::Seconds(10));
  store_.ExpireAll(now_);
  EXPECT_EQ(store_.RecordsOf(Id(1)), 0u);
  EXPECT_EQ(store_.RecordsOf(Id(2)), 1u);
  store_.RemoveProvider(Id(2));
  EXPECT_EQ(store_.RecordsOf(Id(2)), 0u);
}

}  // namespace
}  // namespace shoal::dht
