// 24 DHT nodes over real UDP sockets on 127.0.0.10-33, driven by one
// production EventLoop: bootstrap, advertise, look up from every node, kill
// a quarter of them, look up again, withdraw.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "dht/event_loop.h"
#include "dht/node.h"
#include "dht/udp_transport.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

constexpr int kNodes = 24;
constexpr absl::Duration kDeadline = absl::Seconds(30);

class UdpClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = *EventLoop::Create();
    loop_->Start();
    OnLoop([this] {
      for (int i = 0; i < kNodes; ++i) {
        auto t = UdpTransport::Create(loop_.get(),
                                      absl::StrCat("127.0.0.", 10 + i), 0);
        ASSERT_TRUE(t.ok()) << t.status();
        transports_.push_back(*std::move(t));
        nodes_.push_back(std::make_unique<Node>(
            NodeId::Random(gen_), *transports_.back(), *loop_, gen_));
      }
    });
  }

  void TearDown() override {
    OnLoop([this] {
      nodes_.clear();
      transports_.clear();
    });
    loop_->Stop();
  }

  // Runs `fn` on the loop thread and waits for it.
  void OnLoop(std::function<void()> fn) {
    absl::Notification done;
    loop_->Post([&] {
      fn();
      done.Notify();
    });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(kDeadline));
  }

  // Starts `start(node, finish)` on every live node and waits until each has
  // called finish().
  void OnEveryNode(std::function<void(Node&, std::function<void()>)> start) {
    absl::Notification all_done;
    int pending = 0;
    OnLoop([&] {
      for (auto& n : nodes_) pending += n != nullptr;
      for (auto& n : nodes_) {
        if (n == nullptr) continue;
        start(*n, [&] {
          if (--pending == 0) all_done.Notify();
        });
      }
    });
    ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(kDeadline));
  }

  // Providers every live node finds for `key`.
  std::vector<std::vector<Endpoint>> LookUpEverywhere(const NodeId& key) {
    std::vector<std::vector<Endpoint>> found(kNodes);
    OnEveryNode([&](Node& n, std::function<void()> finish) {
      int index = IndexOf(n);
      n.FindProviders(key, [&found, index, finish](FindProvidersResult r) {
        found[index] = r.providers;
        finish();
      });
    });
    return found;
  }

  int IndexOf(const Node& n) const {
    for (int i = 0; i < kNodes; ++i) {
      if (nodes_[i].get() == &n) return i;
    }
    return -1;
  }

  std::unique_ptr<EventLoop> loop_;
  absl::BitGen gen_;  // Used on the loop thread only.
  std::vector<std::unique_ptr<UdpTransport>> transports_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

TEST_F(UdpClusterTest, AdvertiseLookUpSurviveDeathsAndWithdraw) {
  // Everyone joins through node 0.
  Endpoint seed;
  OnLoop([&] { seed = nodes_[0]->endpoint(); });
  int joined = 0;
  OnEveryNode([&](Node& n, std::function<void()> finish) {
    if (&n == nodes_[0].get()) {
      finish();
      return;
    }
    n.Bootstrap({seed}, [&, finish](absl::Status st) {
      joined += st.ok();
      finish();
    });
  });
  EXPECT_EQ(joined, kNodes - 1);

  // Node 5 advertises a layer digest.
  NodeId key = NodeId::ForKey(
      "sha256:"
      "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef");
  absl::Notification provided;
  absl::Status provide_status;
  Endpoint provider;
  OnLoop([&] {
    provider = nodes_[5]->endpoint();
    nodes_[5]->Provide({key}, [&](absl::Status st) {
      provide_status = st;
      provided.Notify();
    });
  });
  ASSERT_TRUE(provided.WaitForNotificationWithTimeout(kDeadline));
  ASSERT_TRUE(provide_status.ok()) << provide_status;

  for (const auto& providers : LookUpEverywhere(key)) {
    ASSERT_EQ(providers.size(), 1u);
    EXPECT_EQ(providers[0], provider);
  }

  // A quarter of the nodes die (not the provider).
  OnLoop([&] {
    for (int i : {1, 3, 7, 11, 13, 17}) {
      nodes_[i].reset();
      transports_[i].reset();
    }
  });
  std::vector<std::vector<Endpoint>> survivors = LookUpEverywhere(key);
  for (int i = 0; i < kNodes; ++i) {
    if (nodes_[i] == nullptr) continue;
    ASSERT_EQ(survivors[i].size(), 1u) << "node " << i;
    EXPECT_EQ(survivors[i][0], provider);
  }

  // Withdrawn: nobody is named any more.
  absl::Notification withdrawn;
  OnLoop([&] {
    nodes_[5]->Withdraw({key}, [&](absl::Status) { withdrawn.Notify(); });
  });
  ASSERT_TRUE(withdrawn.WaitForNotificationWithTimeout(kDeadline));
  std::vector<std::vector<Endpoint>> after = LookUpEverywhere(key);
  for (int i = 0; i < kNodes; ++i) {
    if (nodes_[i] != nullptr) EXPECT_TRUE(after[i].empty()) << "node " << i;
  }
}

}  // namespace
}  // namespace shoal::dht
