#include "dht/rpc.h"

#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "dht/codec.h"
#include "dht/sim/sim_network.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

using ::shoal::dht::sim::SimNetwork;
using ::shoal::dht::sim::SimTransport;

NodeId Id(uint8_t b) {
  NodeId::Bytes bytes;
  bytes.fill(b);
  return NodeId(bytes);
}

const Endpoint kClient = *Endpoint::Parse("10.0.0.1:4000");
const Endpoint kServer = *Endpoint::Parse("10.0.0.2:4000");
const Endpoint kPeer = *Endpoint::Parse("10.0.0.3:4000");
const Endpoint kOther = *Endpoint::Parse("10.0.0.4:4000");

// A hand-driven node: records decoded datagrams and sends crafted ones.
struct RawPeer {
  RawPeer(SimNetwork& net, const Endpoint& ep) : transport(net.Attach(ep)) {
    transport->SetReceiveCallback(
        [this](const Endpoint& from, absl::string_view datagram) {
          absl::StatusOr<Message> m = Decode(datagram);
          ASSERT_TRUE(m.ok()) << m.status();
          received.push_back(*std::move(m));
        });
  }
  void Send(const Endpoint& to, const Message& m) {
    absl::StatusOr<std::string> bytes = Encode(m);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    ASSERT_TRUE(transport->Send(to, *bytes).ok());
  }
  std::unique_ptr<SimTransport> transport;
  std::vector<Message> received;
};

class RpcTest : public ::testing::Test {
 protected:
  RpcTest()
      : client_transport_(net_.Attach(kClient)),
        server_transport_(net_.Attach(kServer)),
        peer_(net_, kPeer),
        other_(net_, kOther) {
    client_ = std::make_unique<RpcManager>(Id(1), *client_transport_,
                                           net_.clock(), gen_, RpcOptions{});
    RpcOptions server_options;
    server_options.rate_limit.rate_per_second = 1;
    server_options.rate_limit.burst = 3;
    server_ = std::make_unique<RpcManager>(Id(2), *server_transport_,
                                           net_.clock(), gen_, server_options);
    server_->SetRequestHandler([this](const Endpoint& from, Message request) {
      ASSERT_TRUE(server_->SendReply(from, request.request_id, Pong{}).ok());
    });
  }

  // Client pings `to`; the outcome lands in outcomes_.
  void SendPing(const Endpoint& to) {
    ASSERT_TRUE(client_
                    ->SendRequest(to, Ping{},
                                  [this](absl::StatusOr<Message> reply) {
                                    outcomes_.push_back(std::move(reply));
                                  })
                    .ok());
  }
  // The peer answers the last request it received, sending from `via`.
  void PeerReplies(RawPeer& via, Body body = Pong{}) {
    ASSERT_FALSE(peer_.received.empty());
    via.Send(kClient, Message{peer_.received.back().request_id, Id(3), body});
  }
  void AdvanceTime(absl::Duration d) { net_.RunFor(d); }

  const absl::Duration kTimeout = RpcOptions{}.timeout;
  SimNetwork net_;
  std::mt19937_64 gen_{42};
  std::unique_ptr<SimTransport> client_transport_;
  std::unique_ptr<SimTransport> server_transport_;
  RawPeer peer_;
  RawPeer other_;
  std::unique_ptr<RpcManager> client_;
  std::unique_ptr<RpcManager> server_;
  std::vector<absl::StatusOr<Message>> outcomes_;
};

TEST_F(RpcTest, ReplyIsMatchedToRequest) {
  SendPing(kServer);
  EXPECT_EQ(client_->pending(), 1u);
  AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(outcomes_.size(), 1u);
  ASSERT_TRUE(outcomes_[0].ok()) << outcomes_[0].status();
  EXPECT_TRUE(absl::holds_alternative<Pong>(outcomes_[0]->body));
  EXPECT_EQ(outcomes_[0]->sender, Id(2));
  EXPECT_EQ(client_->pending(), 0u);
  EXPECT_EQ(client_->counters().replies_matched, 1u);
  EXPECT_EQ(server_->counters().requests_received, 1u);
}

TEST_F(RpcTest, RequestsCarryFreshRandomIds) {
  for (int i = 0; i < 3; ++i) SendPing(kPeer);
  AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(peer_.received.size(), 3u);
  EXPECT_NE(peer_.received[0].request_id, peer_.received[1].request_id);
  EXPECT_NE(peer_.received[1].request_id, peer_.received[2].request_id);
  EXPECT_EQ(peer_.received[0].sender, Id(1));
}

TEST_F(RpcTest, TimeoutFiresOnceAtDeadline) {
  SendPing(kPeer);
  AdvanceTime(kTimeout - absl::Nanoseconds(1));
  EXPECT_TRUE(outcomes_.empty());
  AdvanceTime(absl::Nanoseconds(1));
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_EQ(outcomes_[0].status().code(), absl::StatusCode::kDeadlineExceeded);
  AdvanceTime(absl::Seconds(10));
  EXPECT_EQ(outcomes_.size(), 1u);
  EXPECT_EQ(client_->counters().timeouts, 1u);
  EXPECT_EQ(client_->pending(), 0u);
}

TEST_F(RpcTest, PerRequestTimeoutOverridesDefault) {
  ASSERT_TRUE(client_
                  ->SendRequest(kPeer, Ping{}, absl::Milliseconds(5),
                                [this](absl::StatusOr<Message> r) {
                                  outcomes_.push_back(std::move(r));
                                })
                  .ok());
  AdvanceTime(absl::Milliseconds(5));
  EXPECT_EQ(outcomes_.size(), 1u);
}

TEST_F(RpcTest, LateReplyIsCountedAndDropped) {
  SendPing(kPeer);
  AdvanceTime(kTimeout);
  PeerReplies(peer_);
  AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_FALSE(outcomes_[0].ok());
  EXPECT_EQ(client_->counters().late_replies, 1u);
  EXPECT_EQ(client_->counters().replies_matched, 0u);
}

TEST_F(RpcTest, ReplayedReplyIsDropped) {
  SendPing(kPeer);
  AdvanceTime(absl::Milliseconds(1));
  PeerReplies(peer_);
  PeerReplies(peer_);
  AdvanceTime(kTimeout * 2);
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_TRUE(outcomes_[0].ok());
  EXPECT_EQ(client_->counters().duplicate_replies, 1u);
  EXPECT_EQ(client_->counters().timeouts, 0u);
}

TEST_F(RpcTest, ReplyFromAnotherEndpointIsUnsolicited) {
  SendPing(kPeer);
  AdvanceTime(absl::Milliseconds(1));
  PeerReplies(other_);  // Right request ID, wrong source.
  AdvanceTime(kTimeout);
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_EQ(outcomes_[0].status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(client_->counters().unsolicited_replies, 1u);
}

TEST_F(RpcTest, UnknownRequestIdIsUnsolicited) {
  peer_.Send(kClient, Message{12345, Id(3), Pong{}});
  AdvanceTime(absl::Milliseconds(1));
  EXPECT_EQ(client_->counters().unsolicited_replies, 1u);
  EXPECT_TRUE(outcomes_.empty());
}

TEST_F(RpcTest, WrongReplyTypeIsIgnoredAndRequestKeepsWaiting) {
  SendPing(kPeer);
  AdvanceTime(absl::Milliseconds(1));
  PeerReplies(peer_, Nodes{});
  AdvanceTime(absl::Milliseconds(1));
  EXPECT_TRUE(outcomes_.empty());
  EXPECT_EQ(client_->counters().wrong_type_replies, 1u);
  PeerReplies(peer_, Pong{});
  AdvanceTime(absl::Milliseconds(1));
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_TRUE(outcomes_[0].ok());
}

TEST_F(RpcTest, MalformedDatagramsAreDropped) {
  ASSERT_TRUE(peer_.transport->Send(kClient, "not a protobuf \xff\xff").ok());
  ASSERT_TRUE(peer_.transport->Send(kClient, std::string(1201, '\0')).ok());
  ASSERT_TRUE(peer_.transport->Send(kClient, "").ok());
  AdvanceTime(absl::Milliseconds(1));
  EXPECT_EQ(client_->counters().malformed, 3u);
  EXPECT_EQ(client_->counters().requests_received, 0u);
}

TEST_F(RpcTest, RejectsNonRequestBodies) {
  absl::Status s = client_->SendRequest(kPeer, Pong{}, [](auto) { FAIL(); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->pending(), 0u);
  EXPECT_EQ(client_->SendReply(kPeer, 1, Ping{}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RpcTest, IncomingRequestsAreRateLimitedPerSource) {
  // The server admits a burst of 3, then 1 per second, per address.
  for (int i = 0; i < 5; ++i) SendPing(kServer);
  peer_.Send(kServer, Message{7, Id(3), Ping{}});
  AdvanceTime(kTimeout);
  EXPECT_EQ(client_->counters().replies_matched, 3u);
  EXPECT_EQ(client_->counters().timeouts, 2u);
  EXPECT_EQ(server_->counters().requests_rate_limited, 2u);
  ASSERT_EQ(peer_.received.size(), 1u);  // Another source is unaffected.

  AdvanceTime(absl::Seconds(1));
  SendPing(kServer);
  AdvanceTime(absl::Milliseconds(1));
  EXPECT_EQ(client_->counters().replies_matched, 4u);
}

TEST_F(RpcTest, CallbackMaySendNextRequest) {
  int answered = 0;
  std::function<void(absl::StatusOr<Message>)> again =
      [&](absl::StatusOr<Message> reply) {
        ASSERT_TRUE(reply.ok());
        if (++answered < 3) {
          ASSERT_TRUE(client_->SendRequest(kServer, Ping{}, again).ok());
        }
      };
  ASSERT_TRUE(client_->SendRequest(kServer, Ping{}, again).ok());
  net_.RunUntilIdle();
  EXPECT_EQ(answered, 3);
  EXPECT_EQ(client_->pending(), 0u);
}

TEST_F(RpcTest, EveryRequestGetsExactlyOneOutcomeUnderLoss) {
  // A server with default limits (burst 400), so only loss decides.
  const Endpoint kLossy = *Endpoint::Parse("10.0.0.5:4000");
  std::unique_ptr<SimTransport> transport = net_.Attach(kLossy);
  RpcManager lossy(Id(5), *transport, net_.clock(), gen_);
  lossy.SetRequestHandler([&](const Endpoint& from, Message request) {
    ASSERT_TRUE(lossy.SendReply(from, request.request_id, Pong{}).ok());
  });
  net_.SetLossRate(0.2);
  for (int i = 0; i < 300; ++i) SendPing(kLossy);
  net_.RunUntilIdle();

  EXPECT_EQ(outcomes_.size(), 300u);
  const RpcCounters& c = client_->counters();
  EXPECT_EQ(c.replies_matched + c.timeouts, 300u);
  // 0.8 * 0.8 of 300 = 192 round trips survive; the deviation is ~8.3.
  EXPECT_GE(c.replies_matched, 150u);
  EXPECT_LE(c.replies_matched, 235u);
  EXPECT_EQ(c.late_replies + c.duplicate_replies, 0u);
  EXPECT_EQ(client_->pending(), 0u);
}

TEST_F(RpcTest, DestructionCancelsTimersWithoutRunningCallbacks) {
  SendPing(kPeer);
  client_.reset();
  net_.RunUntilIdle();
  EXPECT_TRUE(outcomes_.empty());
}

}  // namespace
}  // namespace shoal::dht
