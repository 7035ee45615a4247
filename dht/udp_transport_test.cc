// UdpTransport over real sockets on loopback addresses.
#include "dht/udp_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

constexpr absl::Duration kDeadline = absl::Seconds(10);

class UdpTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = *EventLoop::Create();
    loop_->Start();
  }
  void TearDown() override {
    loop_->Stop();  // Transports go after the loop has stopped.
  }
  std::unique_ptr<EventLoop> loop_;
};

TEST_F(UdpTransportTest, ExchangesDatagramsOnLoopback) {
  auto a = UdpTransport::Create(loop_.get(), "127.0.0.1", 0);
  auto b = UdpTransport::Create(loop_.get(), "127.0.0.2", 0);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  absl::Notification got;
  Endpoint from;
  std::string payload;
  (*b)->SetReceiveCallback([&](const Endpoint& f, absl::string_view d) {
    EXPECT_TRUE(loop_->InLoopThread());
    from = f;
    payload = std::string(d);
    got.Notify();
  });
  loop_->Post(
      [&] { EXPECT_TRUE((*a)->Send((*b)->local_endpoint(), "hello").ok()); });
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(kDeadline));
  EXPECT_EQ(payload, "hello");
  EXPECT_EQ(from, (*a)->local_endpoint());
  EXPECT_EQ(from.ToString().rfind("127.0.0.1:", 0), 0u);
}

TEST_F(UdpTransportTest, Ipv6Loopback) {
  auto a = UdpTransport::Create(loop_.get(), "::1", 0);
  if (!a.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << a.status();
  auto b = UdpTransport::Create(loop_.get(), "::1", 0);
  ASSERT_TRUE(b.ok());
  absl::Notification got;
  (*b)->SetReceiveCallback([&](const Endpoint& f, absl::string_view d) {
    EXPECT_EQ(f.family(), Endpoint::Family::kIpv6);
    EXPECT_EQ(d, "v6");
    got.Notify();
  });
  loop_->Post(
      [&] { EXPECT_TRUE((*a)->Send((*b)->local_endpoint(), "v6").ok()); });
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(kDeadline));
}

TEST_F(UdpTransportTest, OversizedDatagramsAreRefusedAndDropped) {
  auto a = UdpTransport::Create(loop_.get(), "127.0.0.1", 0);
  auto b = UdpTransport::Create(loop_.get(), "127.0.0.1", 0);
  ASSERT_TRUE(a.ok() && b.ok());
  std::string big(kMaxUdpPayloadBytes + 1, 'x');
  absl::Notification got;
  std::string last;
  (*b)->SetReceiveCallback([&](const Endpoint&, absl::string_view d) {
    last = std::string(d);
    got.Notify();
  });
  absl::Notification sent;
  loop_->Post([&] {
    EXPECT_EQ((*a)->Send((*b)->local_endpoint(), big).code(),
              absl::StatusCode::kInvalidArgument);
    sent.Notify();
  });
  ASSERT_TRUE(sent.WaitForNotificationWithTimeout(kDeadline));
  // A raw oversized datagram from a plain socket is truncated and dropped;
  // the next normal one still arrives.
  int raw = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons((*b)->local_endpoint().port());
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_GT(sendto(raw, big.data(), big.size(), 0,
                   reinterpret_cast<sockaddr*>(&to), sizeof(to)),
            0);
  ASSERT_GT(
      sendto(raw, "ok", 2, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
  close(raw);
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(kDeadline));
  EXPECT_EQ(last, "ok");
  absl::Notification checked;
  loop_->Post([&] {
    EXPECT_EQ((*b)->dropped(), 1u);
    checked.Notify();
  });
  ASSERT_TRUE(checked.WaitForNotificationWithTimeout(kDeadline));
}

TEST_F(UdpTransportTest, BadAddressesAreRejected) {
  EXPECT_EQ(UdpTransport::Create(loop_.get(), "not-an-ip", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UdpTransport::Create(loop_.get(), "0.0.0.0", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::dht
