#include "dht/sim/sim_network.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht::sim {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

Endpoint Ep(int host) {
  return *Endpoint::Parse(absl::StrCat("10.0.0.", host, ":4000"));
}

// One attached transport that records what it receives and when.
struct Node {
  struct Received {
    Endpoint from;
    std::string datagram;
    absl::Time at;
  };

  Node(SimNetwork& net, int host) : transport(net.Attach(Ep(host))) {
    transport->SetReceiveCallback(
        [this, &net](const Endpoint& from, absl::string_view datagram) {
          received.push_back({from, std::string(datagram), net.Now()});
        });
  }
  void Send(const Endpoint& to, absl::string_view datagram) {
    ASSERT_TRUE(transport->Send(to, datagram).ok());
  }
  std::vector<std::string> Datagrams() const {
    std::vector<std::string> out;
    for (const Received& r : received) out.push_back(r.datagram);
    return out;
  }

  std::unique_ptr<SimTransport> transport;
  std::vector<Received> received;
};

class SimNetworkTest : public ::testing::Test {
 protected:
  absl::Time start_ = absl::FromUnixSeconds(1000000);
  SimNetwork net_{SimNetworkOptions{}, start_};
  Node a_{net_, 1};
  Node b_{net_, 2};
  Node c_{net_, 3};
};

TEST_F(SimNetworkTest, TimersRunInTimestampOrderThenScheduleOrder) {
  std::vector<int> ran;
  SimClock& clock = net_.clock();
  clock.Schedule(absl::Milliseconds(2), [&] { ran.push_back(2); });
  clock.Schedule(absl::Milliseconds(1), [&] { ran.push_back(1); });
  clock.Schedule(absl::Milliseconds(2), [&] { ran.push_back(3); });
  clock.Schedule(absl::Milliseconds(-5), [&] { ran.push_back(0); });
  EXPECT_EQ(net_.RunUntilIdle(), 4u);
  EXPECT_THAT(ran, ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(clock.Now(), start_ + absl::Milliseconds(2));
}

TEST_F(SimNetworkTest, CancelledTimerNeverRuns) {
  bool ran = false;
  Clock::TimerId id =
      net_.clock().Schedule(absl::Seconds(1), [&] { ran = true; });
  EXPECT_TRUE(net_.clock().Cancel(id));
  EXPECT_FALSE(net_.clock().Cancel(id));
  net_.RunFor(absl::Seconds(2));
  EXPECT_FALSE(ran);
}

TEST_F(SimNetworkTest, CancelAfterRunReturnsFalse) {
  Clock::TimerId id = net_.clock().Schedule(absl::Seconds(1), [] {});
  net_.RunFor(absl::Seconds(1));
  EXPECT_FALSE(net_.clock().Cancel(id));
  EXPECT_FALSE(net_.clock().Cancel(12345));
}

TEST_F(SimNetworkTest, RunUntilStopsAtDeadlineAndAdvancesClock) {
  bool ran = false;
  net_.clock().Schedule(absl::Seconds(2), [&] { ran = true; });
  net_.RunFor(absl::Seconds(1));
  EXPECT_FALSE(ran);
  EXPECT_EQ(net_.Now(), start_ + absl::Seconds(1));
  net_.RunFor(absl::Seconds(1));
  EXPECT_TRUE(ran);
}

TEST_F(SimNetworkTest, DeliversAfterDefaultLatency) {
  a_.Send(Ep(2), "hi");
  net_.RunFor(absl::Microseconds(250) - absl::Nanoseconds(1));
  EXPECT_THAT(b_.received, IsEmpty());
  net_.RunFor(absl::Nanoseconds(1));
  ASSERT_EQ(b_.received.size(), 1u);
  EXPECT_EQ(b_.received[0].from, Ep(1));
  EXPECT_EQ(b_.received[0].datagram, "hi");
  EXPECT_EQ(b_.received[0].at, start_ + absl::Microseconds(250));
}

TEST_F(SimNetworkTest, LinkLatencyIsOneWay) {
  net_.SetLatency(Ep(1), Ep(2), absl::Milliseconds(10));
  a_.Send(Ep(2), "slow");
  b_.Send(Ep(1), "fast");
  net_.RunUntilIdle();
  EXPECT_EQ(b_.received.at(0).at, start_ + absl::Milliseconds(10));
  EXPECT_EQ(a_.received.at(0).at, start_ + absl::Microseconds(250));
}

TEST_F(SimNetworkTest, DeliversInTimestampOrderNotSendOrder) {
  net_.SetLatency(Ep(1), Ep(3), absl::Milliseconds(5));
  net_.SetLatency(Ep(2), Ep(3), absl::Milliseconds(1));
  a_.Send(Ep(3), "first sent");
  b_.Send(Ep(3), "second sent");
  a_.Send(Ep(3), "third sent");
  net_.RunUntilIdle();
  EXPECT_THAT(c_.Datagrams(),
              ElementsAre("second sent", "first sent", "third sent"));
}

TEST_F(SimNetworkTest, TimersAndDeliveriesShareOneQueue) {
  std::vector<std::string> events;
  net_.SetLatency(Ep(1), Ep(2), absl::Milliseconds(2));
  b_.transport->SetReceiveCallback(
      [&](const Endpoint&, absl::string_view d) { events.emplace_back(d); });
  net_.clock().Schedule(absl::Milliseconds(3), [&] { events.push_back("t3"); });
  net_.clock().Schedule(absl::Milliseconds(1), [&] { events.push_back("t1"); });
  a_.Send(Ep(2), "d2");
  net_.RunUntilIdle();
  EXPECT_THAT(events, ElementsAre("t1", "d2", "t3"));
}

TEST_F(SimNetworkTest, LossRateStaysWithinBounds) {
  // 10,000 datagrams at 10% loss: the standard deviation of the count lost is
  // 30, so [850, 1150] is five deviations either way.
  net_.SetLossRate(0.1);
  for (int i = 0; i < 10000; ++i) a_.Send(Ep(2), "x");
  net_.RunUntilIdle();
  EXPECT_GE(net_.counters().lost, 850u);
  EXPECT_LE(net_.counters().lost, 1150u);
  EXPECT_EQ(b_.received.size(), 10000 - net_.counters().lost);
  EXPECT_EQ(net_.counters().delivered, b_.received.size());
}

TEST(SimNetwork, SameSeedLosesSameDatagrams) {
  auto lost_indices = [](uint64_t seed) {
    SimNetwork net(SimNetworkOptions{seed, absl::Microseconds(250), 0.3});
    Node a(net, 1);
    Node b(net, 2);
    for (int i = 0; i < 200; ++i) a.Send(Ep(2), absl::StrCat(i));
    net.RunUntilIdle();
    return b.Datagrams();
  };
  EXPECT_EQ(lost_indices(7), lost_indices(7));
  EXPECT_NE(lost_indices(7), lost_indices(8));
}

TEST_F(SimNetworkTest, BlockedPairDropsBothWaysUntilUnblocked) {
  net_.Block(Ep(1), Ep(2));
  a_.Send(Ep(2), "a->b");
  b_.Send(Ep(1), "b->a");
  a_.Send(Ep(3), "a->c");
  net_.RunUntilIdle();
  EXPECT_THAT(b_.received, IsEmpty());
  EXPECT_THAT(a_.received, IsEmpty());
  EXPECT_THAT(c_.Datagrams(), ElementsAre("a->c"));
  EXPECT_EQ(net_.counters().blocked, 2u);

  net_.Unblock(Ep(2), Ep(1));
  a_.Send(Ep(2), "again");
  net_.RunUntilIdle();
  EXPECT_THAT(b_.Datagrams(), ElementsAre("again"));
}

TEST_F(SimNetworkTest, PartitionSplitsGroupsAndHealRestores) {
  net_.Partition({Ep(1)}, {Ep(2), Ep(3)});
  a_.Send(Ep(2), "x");
  a_.Send(Ep(3), "x");
  c_.Send(Ep(1), "x");
  b_.Send(Ep(3), "same side");
  net_.RunUntilIdle();
  EXPECT_THAT(a_.received, IsEmpty());
  EXPECT_THAT(b_.received, IsEmpty());
  EXPECT_THAT(c_.Datagrams(), ElementsAre("same side"));

  net_.Heal();
  a_.Send(Ep(2), "healed");
  c_.Send(Ep(1), "healed");
  net_.RunUntilIdle();
  EXPECT_THAT(b_.Datagrams(), ElementsAre("healed"));
  EXPECT_THAT(a_.Datagrams(), ElementsAre("healed"));
}

TEST_F(SimNetworkTest, GroupsBlockAcrossAndHealRestores) {
  net_.SetGroup(Ep(1), 1);
  a_.Send(Ep(2), "x");
  c_.Send(Ep(1), "x");
  b_.Send(Ep(3), "same group");
  net_.RunUntilIdle();
  EXPECT_THAT(a_.received, IsEmpty());
  EXPECT_THAT(b_.received, IsEmpty());
  EXPECT_THAT(c_.Datagrams(), ElementsAre("same group"));

  net_.Heal();
  a_.Send(Ep(2), "healed");
  net_.RunUntilIdle();
  EXPECT_THAT(b_.Datagrams(), ElementsAre("healed"));
}

TEST_F(SimNetworkTest, DatagramToDetachedEndpointIsUnreachable) {
  a_.Send(Ep(9), "nobody");
  b_.Send(Ep(3), "in flight");
  c_.transport.reset();
  net_.RunUntilIdle();
  EXPECT_EQ(net_.counters().unreachable, 2u);
  EXPECT_EQ(net_.counters().delivered, 0u);
}

TEST_F(SimNetworkTest, RejectsOversizedDatagram) {
  EXPECT_EQ(a_.transport->Send(Ep(2), std::string(65508, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net_.counters().sent, 0u);
}

TEST_F(SimNetworkTest, ReceiveCallbackCanReplyWithoutReentrancy) {
  int depth = 0;
  b_.transport->SetReceiveCallback(
      [&](const Endpoint& from, absl::string_view d) {
        ++depth;
        EXPECT_EQ(depth, 1);
        b_.Send(from, absl::StrCat("re:", d));
        --depth;
      });
  a_.Send(Ep(2), "ping");
  net_.RunUntilIdle();
  EXPECT_THAT(a_.Datagrams(), ElementsAre("re:ping"));
  EXPECT_EQ(a_.received[0].at, start_ + absl::Microseconds(500));
}

}  // namespace
}  // namespace shoal::dht::sim
