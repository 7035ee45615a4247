#include "dht/event_loop.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

constexpr absl::Duration kDeadline = absl::Seconds(10);

std::unique_ptr<EventLoop> Started() {
  auto loop = EventLoop::Create();
  EXPECT_TRUE(loop.ok()) << loop.status();
  (*loop)->Start();
  return *std::move(loop);
}

TEST(EventLoop, RunsTimersInDueThenScheduleOrder) {
  auto loop = Started();
  std::vector<int> order;
  absl::Notification done;
  loop->Post([&] {
    loop->Schedule(absl::Milliseconds(30), [&] {
      order.push_back(3);
      done.Notify();
    });
    loop->Schedule(absl::Milliseconds(10), [&] { order.push_back(1); });
    loop->Schedule(absl::Milliseconds(10), [&] { order.push_back(2); });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kDeadline));
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(EventLoop, TimerNeverRunsEarly) {
  auto loop = Started();
  absl::Notification done;
  absl::Time scheduled, fired;
  loop->Post([&] {
    scheduled = loop->Now();
    loop->Schedule(absl::Milliseconds(20), [&] {
      fired = loop->Now();
      done.Notify();
    });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kDeadline));
  EXPECT_GE(fired - scheduled, absl::Milliseconds(20));
}

TEST(EventLoop, CancelledTimerNeverRuns) {
  auto loop = Started();
  std::atomic<bool> ran{false};
  absl::Notification done;
  loop->Post([&] {
    Clock::TimerId id =
        loop->Schedule(absl::Milliseconds(5), [&] { ran = true; });
    EXPECT_TRUE(loop->Cancel(id));
    EXPECT_FALSE(loop->Cancel(id));
    loop->Schedule(absl::Milliseconds(20), [&] { done.Notify(); });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kDeadline));
  EXPECT_FALSE(ran);
}

TEST(EventLoop, PostFromManyThreadsRunsOnLoopThread) {
  auto loop = Started();
  constexpr int kThreads = 4, kEach = 250;
  std::atomic<int> count{0}, off_loop{0};
  absl::Notification done;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        loop->Post([&] {
          if (!loop->InLoopThread()) ++off_loop;
          if (++count == kThreads * kEach) done.Notify();
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kDeadline));
  EXPECT_EQ(off_loop, 0);
}

TEST(EventLoop, StopIsIdempotentAndDropsLaterPosts) {
  auto loop = Started();
  loop->Stop();
  loop->Stop();
  bool ran = false;
  loop->Post([&] { ran = true; });
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace shoal::dht
