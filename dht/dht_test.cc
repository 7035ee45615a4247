// Two Dht instances over real UDP on 127.0.0.30 and 127.0.0.31, called from
// threads other than their loops': bootstrap, provide and find; a lookup
// that outlives its deadline reports DEADLINE_EXCEEDED once; destruction
// with a lookup in flight drops its callback.
#include "dht/dht.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dht/endpoint.h"
#include "dht/node.h"
#include "dht/node_id.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

// Generous for a loaded 2-core CI host; loopback lookups take milliseconds.
constexpr absl::Duration kWait = absl::Seconds(20);

// A callback's outcome, shared with it: it may run after a timed-out wait.
template <typename T>
struct Outcome {
  absl::Notification done;
  std::atomic<int> calls{0};
  T value;
};

class DhtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = Dht::Create("127.0.0.30", 0);
    ASSERT_TRUE(a.ok()) << a.status();
    a_ = *std::move(a);
    auto b = Dht::Create("127.0.0.31", 0);
    ASSERT_TRUE(b.ok()) << b.status();
    b_ = *std::move(b);
  }

  // B joins through A; returns the bootstrap status.
  absl::Status Join() {
    auto out = std::make_shared<Outcome<absl::Status>>();
    b_->Bootstrap({a_->endpoint()}, [out](absl::Status st) {
      out->value = st;
      out->done.Notify();
    });
    if (!out->done.WaitForNotificationWithTimeout(kWait)) {
      return absl::DeadlineExceededError("bootstrap did not finish");
    }
    return out->value;
  }

  // Starts FindProviders(key) on `dht` and returns its shared outcome.
  static std::shared_ptr<Outcome<absl::StatusOr<FindProvidersResult>>> Find(
      Dht& dht, const NodeId& key, absl::Duration deadline) {
    auto out = std::make_shared<Outcome<absl::StatusOr<FindProvidersResult>>>();
    dht.FindProviders(key, deadline,
                      [out](absl::StatusOr<FindProvidersResult> r) {
                        out->value = std::move(r);
                        ++out->calls;
                        out->done.Notify();
                      });
    return out;
  }

  std::unique_ptr<Dht> a_;
  std::unique_ptr<Dht> b_;
};

TEST_F(DhtTest, ProvidedKeyIsFoundFromAnotherThread) {
  ASSERT_TRUE(Join().ok());
  const NodeId key = NodeId::ForKey("sha256:dht-test-provided");
  absl::Notification provided;
  b_->Provide({key}, [&](absl::Status st) {
    EXPECT_TRUE(st.ok()) << st;
    provided.Notify();
  });
  ASSERT_TRUE(provided.WaitForNotificationWithTimeout(kWait));

  std::vector<Endpoint> found;
  std::thread caller([&] {
    auto out = Find(*a_, key, kWait);
    ASSERT_TRUE(out->done.WaitForNotificationWithTimeout(kWait));
    ASSERT_TRUE(out->value.ok()) << out->value.status();
    found = out->value->providers;
  });
  caller.join();
  EXPECT_NE(std::find(found.begin(), found.end(), b_->endpoint()), found.end());
}

// A's only contact is gone, so its lookup waits 300 ms for a reply that
// never comes; a 1 ms deadline must answer first, and only once.
TEST_F(DhtTest, SlowLookupReportsDeadlineExceededOnce) {
  ASSERT_TRUE(Join().ok());
  absl::Notification known;
  a_->RunOnLoop([&](Node& node) {
    EXPECT_EQ(node.routing_table().size(), 1u);
    known.Notify();
  });
  ASSERT_TRUE(known.WaitForNotificationWithTimeout(kWait));
  b_.reset();

  auto out = Find(*a_, NodeId::ForKey("sha256:nobody"), absl::Milliseconds(1));
  ASSERT_TRUE(out->done.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(out->value.status().code(), absl::StatusCode::kDeadlineExceeded)
      << out->value.status();
  absl::SleepFor(absl::Seconds(1));  // The lookup itself ends after 300 ms.
  EXPECT_EQ(out->calls.load(), 1);
}

TEST_F(DhtTest, DestructionDropsPendingLookups) {
  ASSERT_TRUE(Join().ok());
  b_.reset();  // A's lookups now wait on a dead contact.
  auto with_deadline =
      Find(*a_, NodeId::ForKey("sha256:pending"), absl::Seconds(10));
  auto without =
      Find(*a_, NodeId::ForKey("sha256:pending"), absl::InfiniteDuration());
  a_.reset();
  EXPECT_EQ(with_deadline->calls.load(), 0);
  EXPECT_EQ(without->calls.load(), 0);
}

}  // namespace
}  // namespace shoal::dht
