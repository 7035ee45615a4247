#include "plugin/upload_limiter.h"

#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace shoal::plugin {
namespace {

TEST(UploadLimiterTest, BurstThenTheRate) {
  UploadLimiter limiter(/*bytes_per_second=*/1000, /*burst_bytes=*/200);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(limiter.Reserve(100, t0), absl::ZeroDuration());
  EXPECT_EQ(limiter.Reserve(100, t0), absl::ZeroDuration());
  // The burst is spent: each further 100 bytes waits 0.1 s more.
  EXPECT_EQ(limiter.Reserve(100, t0), absl::Milliseconds(100));
  EXPECT_EQ(limiter.Reserve(100, t0), absl::Milliseconds(200));
  // Time passing refills it.
  EXPECT_EQ(limiter.Reserve(100, t0 + absl::Seconds(10)), absl::ZeroDuration());
}

TEST(UploadLimiterTest, LargeSendWaitsForItsShare) {
  UploadLimiter limiter(1000, 100);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(limiter.Reserve(1100, t0), absl::Seconds(1));
}

TEST(UploadLimiterTest, DelayedSendsRunInOrderOnTheLimitersThread) {
  UploadLimiter limiter(/*bytes_per_second=*/100000, /*burst_bytes=*/1000);
  absl::Mutex mu;
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  absl::Notification all;
  constexpr int kSends = 5;
  for (int i = 0; i < kSends; ++i) {
    limiter.Pace(1000, [&, i] {
      absl::MutexLock lock(&mu);
      order.push_back(i);
      threads.push_back(std::this_thread::get_id());
      if (order.size() == kSends) all.Notify();
    });
  }
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(30)));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(threads[0], std::this_thread::get_id());  // Within the burst.
  EXPECT_NE(threads[4], std::this_thread::get_id());  // Waited.
}

TEST(UploadLimiterTest, DestructorRunsWaitingSends) {
  absl::Notification ran;
  {
    UploadLimiter limiter(1, 1);
    limiter.Pace(1, [] {});
    limiter.Pace(1000, [&] { ran.Notify(); });  // Would wait ~17 minutes.
  }
  EXPECT_TRUE(ran.HasBeenNotified());
}

TEST(UploadLimiterTest, StopRunsWaitingSendsAndLiftsTheCap) {
  UploadLimiter limiter(1, 1);
  absl::Notification waited;
  limiter.Pace(1, [] {});
  limiter.Pace(1000, [&] { waited.Notify(); });
  EXPECT_FALSE(waited.HasBeenNotified());
  limiter.Stop();
  EXPECT_TRUE(waited.WaitForNotificationWithTimeout(absl::Seconds(30)));
  bool ran = false;
  limiter.Pace(1 << 20, [&] { ran = true; });
  EXPECT_TRUE(ran);  // At once, on this thread.
}

}  // namespace
}  // namespace shoal::plugin
