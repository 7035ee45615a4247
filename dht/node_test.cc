#include "dht/node.h"

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "dht/codec.h"
#include "dht/sim/sim_network.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

using ::shoal::dht::sim::SimNetwork;
using ::shoal::dht::sim::SimNetworkOptions;
using ::shoal::dht::sim::SimTransport;
using ::testing::Contains;
using ::testing::IsEmpty;
using ::testing::Not;

Endpoint Ep(int i) {
  return *Endpoint::Parse(
      absl::StrCat("10.0.", i / 250, ".", i % 250 + 1, ":4000"));
}

// N nodes with seeded random IDs on one SimNetwork; node 0 is the seed.
class Cluster {
 public:
  explicit Cluster(int n, double loss_rate = 0, uint64_t seed = 1,
                   NodeOptions options = {})
      : net_(SimNetworkOptions{seed, absl::Microseconds(250), loss_rate}),
        gen_(seed) {
    for (int i = 0; i < n; ++i) {
      transports_.push_back(net_.Attach(Ep(i)));
      nodes_.push_back(std::make_unique<Node>(NodeId::Random(gen_),
                                              *transports_.back(), net_.clock(),
                                              gen_, options));
    }
  }

  // Runs the network until `done` holds, at most a simulated minute. Nodes
  // that hold provider records check them on a timer forever, so
  // RunUntilIdle would never return.
  template <typename Pred>
  void RunUntil(Pred done) {
    const absl::Time limit = net_.Now() + absl::Minutes(1);
    while (!done() && net_.Now() < limit) net_.RunFor(absl::Milliseconds(5));
  }

  // Bootstraps nodes 1..n-1 from node 0, one after another.
  void BootstrapAll() {
    for (size_t i = 1; i < nodes_.size(); ++i) {
      absl::optional<absl::Status> status;
      nodes_[i]->Bootstrap({Ep(0)}, [&](absl::Status s) { status = s; });
      RunUntil([&] { return status.has_value(); });
      ASSERT_TRUE(status.has_value()) << "node " << i;
      ASSERT_TRUE(status->ok()) << "node " << i << ": " << *status;
    }
  }

  absl::Status Provide(int i, const std::vector<NodeId>& keys) {
    absl::optional<absl::Status> status;
    nodes_[i]->Provide(keys, [&](absl::Status s) { status = s; });
    RunUntil([&] { return status.has_value(); });
    return status.value_or(absl::UnknownError("callback did not run"));
  }

  absl::Status Withdraw(int i, const std::vector<NodeId>& keys) {
    absl::optional<absl::Status> status;
    nodes_[i]->Withdraw(keys, [&](absl::Status s) { status = s; });
    RunUntil([&] { return status.has_value(); });
    return status.value_or(absl::UnknownError("callback did not run"));
  }

  FindProvidersResult Find(int i, const NodeId& key) {
    absl::optional<FindProvidersResult> result;
    nodes_[i]->FindProviders(key, [&](FindProvidersResult r) { result = r; });
    RunUntil([&] { return result.has_value(); });
    EXPECT_TRUE(result.has_value()) << "node " << i;
    return result.value_or(FindProvidersResult{});
  }

  // Blocks every link between the `dead` nodes and all others.
  void Kill(const std::vector<int>& dead) {
    std::vector<Endpoint> dead_eps, live_eps;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      bool is_dead = std::find(dead.begin(), dead.end(), i) != dead.end();
      (is_dead ? dead_eps : live_eps).push_back(Ep(i));
    }
    net_.Partition(dead_eps, live_eps);
  }

  // Routing-table entries, over the nodes not in `dead`, that point at one.
  size_t DeadEntries(const std::vector<int>& dead) const {
    size_t count = 0;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (std::find(dead.begin(), dead.end(), i) != dead.end()) continue;
      for (int d : dead) {
        count += nodes_[i]->routing_table().Contains(nodes_[d]->id());
      }
    }
    return count;
  }

  Node& node(int i) { return *nodes_[i]; }
  int size() const { return static_cast<int>(nodes_.size()); }
  SimNetwork& net() { return net_; }

 private:
  SimNetwork net_;
  std::mt19937_64 gen_;
  std::vector<std::unique_ptr<SimTransport>> transports_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

const NodeId kKey = NodeId::ForKey("sha256:layer-1");

// A hand-driven peer that sends crafted requests to a node.
class NodeRequestTest : public ::testing::Test {
 protected:
  NodeRequestTest()
      : node_transport_(net_.Attach(Ep(0))),
        peer_(net_.Attach(Ep(1))),
        node_(Id(1), *node_transport_, net_.clock(), gen_) {
    peer_->SetReceiveCallback([this](const Endpoint&, absl::string_view d) {
      absl::StatusOr<Message> m = Decode(d);
      ASSERT_TRUE(m.ok()) << m.status();
      replies_.push_back(*std::move(m));
    });
  }
  static NodeId Id(uint8_t b) {
    NodeId::Bytes bytes;
    bytes.fill(b);
    return NodeId(bytes);
  }
  // Sends `body` from the peer (ID Id(2)) and returns the node's reply body.
  Body Ask(Body body) {
    absl::StatusOr<std::string> bytes =
        Encode(Message{++request_id_, Id(2), std::move(body)});
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_TRUE(peer_->Send(Ep(0), *bytes).ok());
    // Not RunUntilIdle: once the node holds the peer's records it checks
    // them on a timer forever. A reply takes one round trip (0.5 ms).
    net_.RunFor(absl::Milliseconds(10));
    EXPECT_FALSE(replies_.empty());
    if (replies_.empty()) return Ping{};
    EXPECT_EQ(replies_.back().request_id, request_id_);
    return replies_.back().body;
  }

  SimNetwork net_;
  std::mt19937_64 gen_{7};
  std::unique_ptr<SimTransport> node_transport_;
  std::unique_ptr<SimTransport> peer_;
  Node node_;
  uint64_t request_id_ = 100;
  std::vector<Message> replies_;
};

TEST_F(NodeRequestTest, AnswersPingAndLearnsTheSender) {
  EXPECT_TRUE(absl::holds_alternative<Pong>(Ask(Ping{})));
  EXPECT_TRUE(node_.routing_table().Contains(Id(2)));
}

TEST_F(NodeRequestTest, AnswersFindNodeFromTheRoutingTable) {
  Body reply = Ask(FindNode{Id(9)});
  ASSERT_TRUE(absl::holds_alternative<Nodes>(reply));
  EXPECT_THAT(absl::get<Nodes>(reply).contacts,
              Contains(Contact{Id(2), Ep(1)}));
}

TEST_F(NodeRequestTest, StoresAndWithdrawsProviderRecords) {
  const Endpoint fetch_from = *Endpoint::Parse("10.9.9.9:5000");
  EXPECT_TRUE(absl::holds_alternative<Pong>(
      Ask(AddProvider{{kKey}, fetch_from, absl::Hours(1)})));
  Body found = Ask(GetProviders{kKey});
  ASSERT_TRUE(absl::holds_alternative<Providers>(found));
  EXPECT_THAT(absl::get<Providers>(found).providers, Contains(fetch_from));

  EXPECT_TRUE(absl::holds_alternative<Pong>(Ask(WithdrawProvider{{kKey}})));
  found = Ask(GetProviders{kKey});
  EXPECT_THAT(absl::get<Providers>(found).providers, IsEmpty());
}

TEST(Node, LoneNodeFindsNothingAndCallsBackLater) {
  Cluster cluster(1);
  bool called = false;
  cluster.node(0).FindProviders(kKey, [&](FindProvidersResult r) {
    called = true;
    EXPECT_THAT(r.providers, IsEmpty());
  });
  EXPECT_FALSE(called);
  cluster.net().RunUntilIdle();
  EXPECT_TRUE(called);
}

TEST(Node, BootstrapFromUnreachableSeedFails) {
  Cluster cluster(1);
  absl::Status status;
  cluster.node(0).Bootstrap({Ep(5)}, [&](absl::Status s) { status = s; });
  cluster.net().RunUntilIdle();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
}

TEST(Node, HundredNodesBootstrapFromOneSeed) {
  Cluster cluster(100);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  // Not all 99 fit at the seed: its far bucket holds half the ID space
  // but only k = 20 contacts.
  EXPECT_GE(cluster.node(0).routing_table().size(), 60u);
  for (int i = 1; i < cluster.size(); ++i) {
    EXPECT_GE(cluster.node(i).routing_table().size(), 20u) << "node " << i;
  }
}

TEST(Node, ProvidedKeyIsFoundFromEveryNode) {
  Cluster cluster(200);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  ASSERT_TRUE(cluster.Provide(7, {kKey}).ok());
  int max_hops = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    FindProvidersResult found = cluster.Find(i, kKey);
    EXPECT_THAT(found.providers, Contains(Ep(7))) << "node " << i;
    max_hops = std::max(max_hops, found.hops);
  }
  ::testing::Test::RecordProperty("max_hops", max_hops);
  // log2(200) is under 8; with k = 20 per bucket it takes far fewer.
  EXPECT_LE(max_hops, 4);
}

TEST(Node, ProvideGroupsKeysPerDestination) {
  Cluster cluster(50);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  std::vector<NodeId> keys;
  for (int i = 0; i < 40; ++i) {
    keys.push_back(NodeId::ForKey(absl::StrCat("sha256:blob-", i)));
  }
  const uint64_t sent_before = cluster.node(3).rpc_counters().requests_sent;
  const uint64_t lookups_before = cluster.node(3).counters().lookup_requests;
  ASSERT_TRUE(cluster.Provide(3, keys).ok());
  const uint64_t announcements =
      cluster.node(3).rpc_counters().requests_sent - sent_before -
      (cluster.node(3).counters().lookup_requests - lookups_before);
  // One message per key and holder would be 40 * 20 = 800; grouped, each of
  // the 49 other nodes gets at most two (40 keys, 32 per message).
  EXPECT_LE(announcements, 2u * 49u);
  for (int i = 0; i < 40; i += 7) {
    EXPECT_THAT(cluster.Find(20, keys[i]).providers, Contains(Ep(3)));
  }
}

TEST(Node, WithdrawnKeysStopBeingReturned) {
  Cluster cluster(60);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  const NodeId other = NodeId::ForKey("sha256:layer-2");
  ASSERT_TRUE(cluster.Provide(5, {kKey, other}).ok());
  ASSERT_TRUE(cluster.Provide(6, {kKey}).ok());
  ASSERT_TRUE(cluster.Withdraw(5, {kKey}).ok());
  for (int i = 0; i < cluster.size(); i += 3) {
    FindProvidersResult found = cluster.Find(i, kKey);
    EXPECT_THAT(found.providers, Not(Contains(Ep(5)))) << "node " << i;
    EXPECT_THAT(found.providers, Contains(Ep(6))) << "node " << i;
    EXPECT_THAT(cluster.Find(i, other).providers, Contains(Ep(5)));
  }
}

// Records lapsed after provider_ttl although their provider still held the
// blobs; a node must republish what it provides, and only that.
TEST(Node, RepublishKeepsProvidedKeysPastTheTtlButNotWithdrawnOnes) {
  // A one-minute TTL stands for 24 hours: the schedule scales.
  NodeOptions options;
  options.provider_ttl = absl::Minutes(1);
  options.republish_interval = absl::Seconds(15);
  options.republish_batch_keys = 2;
  Cluster cluster(40, /*loss_rate=*/0, /*seed=*/1, options);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  std::vector<NodeId> keys;
  for (int i = 0; i < 5; ++i) {
    keys.push_back(NodeId::ForKey(absl::StrCat("sha256:kept-", i)));
  }
  const NodeId gone = NodeId::ForKey("sha256:withdrawn");
  std::vector<NodeId> all = keys;
  all.push_back(gone);
  ASSERT_TRUE(cluster.Provide(5, all).ok());
  ASSERT_TRUE(cluster.Withdraw(5, {gone}).ok());

  // Three TTLs: every original record has expired twice over.
  cluster.net().RunFor(absl::Minutes(3));
  for (const NodeId& key : keys) {
    EXPECT_THAT(cluster.Find(20, key).providers, Contains(Ep(5)));
  }
  EXPECT_THAT(cluster.Find(20, gone).providers, Not(Contains(Ep(5))));
  for (int i = 0; i < cluster.size(); ++i) {
    for (const ProviderRecord& record :
         cluster.node(i).provider_store().Get(gone, cluster.net().Now())) {
      EXPECT_NE(record.endpoint, Ep(5)) << "node " << i;
    }
  }
  // A round every 15 s, each of the 5 kept keys (3 batches of <= 2, 5 s
  // apart): about 12 rounds in the 3 minutes.
  EXPECT_GE(cluster.node(5).counters().republished_keys, 10u * 5u);
  EXPECT_LE(cluster.node(5).counters().republished_keys, 13u * 5u);
}

TEST(Node, KilledNodesAreDroppedAndLookupsStillSucceed) {
  Cluster cluster(100);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  ASSERT_TRUE(cluster.Provide(9, {kKey}).ok());
  std::vector<int> dead;
  for (int i = 10; i < 100; i += 5) dead.push_back(i);  // 18 nodes.
  cluster.Kill(dead);
  const size_t dead_before = cluster.DeadEntries(dead);

  // Three rounds, as a contact is dropped after three failed requests; the
  // random targets reach dead contacts far from the key too.
  std::mt19937_64 gen(3);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < cluster.size(); ++i) {
      if (i % 5 == 0 && i >= 10) continue;
      EXPECT_THAT(cluster.Find(i, kKey).providers, Contains(Ep(9)))
          << "round " << round << " node " << i;
      for (int t = 0; t < 4; ++t) {
        cluster.node(i).FindClosestNodes(NodeId::Random(gen),
                                         [](std::vector<Contact>) {});
      }
      // A lookup through dead contacts takes at most a few hard timeouts.
      cluster.net().RunFor(absl::Seconds(2));
    }
  }
  const size_t dead_after = cluster.DeadEntries(dead);
  ::testing::Test::RecordProperty("dead_entries_before", dead_before);
  ::testing::Test::RecordProperty("dead_entries_after", dead_after);
  // Dead contacts hit the soft timeout, so lookups moved past them.
  uint64_t soft_timeouts = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    soft_timeouts += cluster.node(i).counters().soft_timeouts;
  }
  EXPECT_GT(soft_timeouts, 0u);
  EXPECT_LT(dead_after, dead_before / 2)
      << "before=" << dead_before << " after=" << dead_after;
}

TEST(Node, OnePercentLossStillFinds) {
  Cluster cluster(100, /*loss_rate=*/0.01);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  ASSERT_TRUE(cluster.Provide(4, {kKey}).ok());
  for (int i = 0; i < cluster.size(); ++i) {
    EXPECT_THAT(cluster.Find(i, kKey).providers, Contains(Ep(4)))
        << "node " << i;
  }
  EXPECT_GT(cluster.net().counters().lost, 0u);
}

// Holders of a dead provider's records kept returning it until a lookup
// happened to drop it from their routing table; they must check it instead.
TEST(Node, KilledProviderStopsBeingReturnedWithinFifteenSeconds) {
  Cluster cluster(60);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  ASSERT_TRUE(cluster.Provide(5, {kKey}).ok());
  ASSERT_TRUE(cluster.Provide(6, {kKey}).ok());
  auto holders_of = [&](int provider) {
    int holders = 0;
    for (int i = 0; i < cluster.size(); ++i) {
      if (i == provider) continue;  // Its own record, if among the closest.
      holders += cluster.node(i).provider_store().RecordsOf(
                     cluster.node(provider).id()) > 0;
    }
    return holders;
  };
  ASSERT_GE(holders_of(5), 10);
  cluster.Kill({5});

  // 10 s check interval + 1 s tick + three 300 ms PINGs, with margin.
  cluster.net().RunFor(absl::Seconds(15));
  EXPECT_EQ(holders_of(5), 0);
  EXPECT_GE(holders_of(6), 10);
  for (int i = 0; i < cluster.size(); i += 3) {
    if (i == 5) continue;
    FindProvidersResult found = cluster.Find(i, kKey);
    EXPECT_THAT(found.providers, Not(Contains(Ep(5)))) << "node " << i;
    EXPECT_THAT(found.providers, Contains(Ep(6))) << "node " << i;
  }
}

TEST(Node, ProviderChecksKeepLiveProvidersUnderLossAndStayCheap) {
  Cluster cluster(60, /*loss_rate=*/0.01);
  ASSERT_NO_FATAL_FAILURE(cluster.BootstrapAll());
  ASSERT_TRUE(cluster.Provide(5, {kKey}).ok());
  uint64_t pings_before = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    pings_before += cluster.node(i).counters().provider_pings;
  }
  cluster.net().RunFor(absl::Minutes(2));

  uint64_t pings = 0, removed = 0;
  int holders = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    pings += cluster.node(i).counters().provider_pings;
    removed += cluster.node(i).counters().providers_removed;
    holders +=
        cluster.node(i).provider_store().RecordsOf(cluster.node(5).id()) > 0;
  }
  EXPECT_EQ(removed, 0u);
  EXPECT_GE(holders, 19);
  // Each holder PINGs the one provider about once per 10 s (12 in 2 min,
  // plus retries after losses).
  EXPECT_LE(pings - pings_before, static_cast<uint64_t>(holders) * 14);
  EXPECT_GE(pings - pings_before, static_cast<uint64_t>(holders) * 8);
}

}  // namespace
}  // namespace shoal::dht
