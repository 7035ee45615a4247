#include "dht/rate_limiter.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

Endpoint Ep(int host, int port = 4000) {
  return *Endpoint::Parse(absl::StrCat("10.0.0.", host, ":", port));
}

const absl::Time kStart = absl::FromUnixSeconds(1000);

TEST(TokenBucket, AdmitsBurstThenRefillsAtRate) {
  TokenBucket bucket(/*rate_per_second=*/2, /*burst=*/3, kStart);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(bucket.TryTake(kStart));
  EXPECT_FALSE(bucket.TryTake(kStart));
  EXPECT_FALSE(bucket.TryTake(kStart + absl::Milliseconds(499)));
  EXPECT_TRUE(bucket.TryTake(kStart + absl::Milliseconds(500)));
  EXPECT_FALSE(bucket.TryTake(kStart + absl::Milliseconds(500)));
}

TEST(TokenBucket, RefillIsCappedAtBurst) {
  TokenBucket bucket(10, 2, kStart);
  EXPECT_TRUE(bucket.TryTake(kStart));
  EXPECT_TRUE(bucket.IsFull(kStart + absl::Hours(1)));
  absl::Time later = kStart + absl::Hours(1);
  EXPECT_TRUE(bucket.TryTake(later));
  EXPECT_TRUE(bucket.TryTake(later));
  EXPECT_FALSE(bucket.TryTake(later));
}

TEST(TokenBucket, TimeGoingBackwardsAddsNoTokens) {
  TokenBucket bucket(1, 1, kStart);
  EXPECT_TRUE(bucket.TryTake(kStart));
  EXPECT_FALSE(bucket.TryTake(kStart - absl::Hours(1)));
  EXPECT_FALSE(bucket.TryTake(kStart + absl::Milliseconds(999)));
  EXPECT_TRUE(bucket.TryTake(kStart + absl::Seconds(1)));
}

RateLimiterOptions SmallOptions() {
  RateLimiterOptions options;
  options.rate_per_second = 1;
  options.burst = 2;
  options.max_sources = 2;
  return options;
}

TEST(SourceRateLimiter, LimitsEachAddressSeparately) {
  SourceRateLimiter limiter(SmallOptions());
  EXPECT_TRUE(limiter.Allow(Ep(1), kStart));
  EXPECT_TRUE(limiter.Allow(Ep(1), kStart));
  EXPECT_FALSE(limiter.Allow(Ep(1), kStart));
  EXPECT_TRUE(limiter.Allow(Ep(2), kStart));
  EXPECT_TRUE(limiter.Allow(Ep(1), kStart + absl::Seconds(1)));
}

TEST(SourceRateLimiter, PortsOfOneAddressShareABucket) {
  SourceRateLimiter limiter(SmallOptions());
  EXPECT_TRUE(limiter.Allow(Ep(1, 1), kStart));
  EXPECT_TRUE(limiter.Allow(Ep(1, 2), kStart));
  EXPECT_FALSE(limiter.Allow(Ep(1, 3), kStart));
  EXPECT_EQ(limiter.tracked_sources(), 1u);
}

TEST(SourceRateLimiter, FullTableRefusesNewAddressUntilBucketsRefill) {
  SourceRateLimiter limiter(SmallOptions());
  EXPECT_TRUE(limiter.Allow(Ep(1), kStart));
  EXPECT_TRUE(limiter.Allow(Ep(2), kStart));
  EXPECT_FALSE(limiter.Allow(Ep(3), kStart));
  // After a second both buckets have refilled and are forgotten.
  EXPECT_TRUE(limiter.Allow(Ep(3), kStart + absl::Seconds(1)));
  EXPECT_EQ(limiter.tracked_sources(), 1u);
}

}  // namespace
}  // namespace shoal::dht
