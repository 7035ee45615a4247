// DnsResolver against a small DNS server this test runs on loopback, so the
// real c-ares query path is exercised without touching any other network.
#include "dht/dns_resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

// Answers A and AAAA queries for the names in `records` (addresses as raw 4-
// or 16-byte strings); NXDOMAIN for others; nothing at all when `silent`.
class FakeDnsServer {
 public:
  explicit FakeDnsServer(
      std::map<std::string, std::vector<std::string>> records = {},
      bool silent = false)
      : records_(std::move(records)), silent_(silent) {
    fd_ = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeDnsServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  void Serve() {
    char buf[512];
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      sockaddr_in from{};
      socklen_t len = sizeof(from);
      ssize_t n = recvfrom(fd_, buf, sizeof(buf), 0,
                           reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 17 || silent_) continue;
      std::string reply = Answer(std::string(buf, n));
      sendto(fd_, reply.data(), reply.size(), 0,
             reinterpret_cast<sockaddr*>(&from), len);
    }
  }

  std::string Answer(const std::string& query) {
    // Question: labels from byte 12 to a zero byte, then type and class.
    size_t pos = 12;
    std::string name;
    while (pos < query.size() && query[pos] != 0) {
      int l = static_cast<unsigned char>(query[pos]);
      if (!name.empty()) name += '.';
      name += query.substr(pos + 1, l);
      pos += l + 1;
    }
    size_t question_end = pos + 5;
    int qtype = (static_cast<unsigned char>(query[pos + 1]) << 8) |
                static_cast<unsigned char>(query[pos + 2]);
    std::vector<std::string> answers;
    auto it = records_.find(absl::AsciiStrToLower(name));
    if (it != records_.end()) {
      for (const auto& a : it->second) {
        if ((qtype == 1 && a.size() == 4) || (qtype == 28 && a.size() == 16)) {
          answers.push_back(a);
        }
      }
    }
    std::string r = query.substr(0, question_end);
    r[2] = static_cast<char>(0x81);  // Response, recursion desired.
    r[3] = static_cast<char>(it == records_.end() ? 0x83 : 0x80);  // NXDOMAIN
    r[6] = 0;
    r[7] = static_cast<char>(answers.size());
    r[8] = r[9] = r[10] = r[11] = 0;
    for (const auto& a : answers) {
      r += std::string("\xc0\x0c", 2);  // Name: pointer to the question.
      r += std::string(1, 0) + static_cast<char>(qtype);
      r += std::string("\x00\x01\x00\x00\x00\x3c", 6);  // IN, TTL 60.
      r += std::string(1, 0) + static_cast<char>(a.size());
      r += a;
    }
    return r;
  }

  // Set before the serving thread starts; read-only after.
  const std::map<std::string, std::vector<std::string>> records_;
  const bool silent_;
  int fd_;
  uint16_t port_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::string V4(const char* s) {
  in_addr a;
  inet_pton(AF_INET, s, &a);
  return std::string(reinterpret_cast<const char*>(&a), 4);
}
std::string V6(const char* s) {
  in6_addr a;
  inet_pton(AF_INET6, s, &a);
  return std::string(reinterpret_cast<const char*>(&a), 16);
}

std::unique_ptr<DnsResolver> ResolverFor(const FakeDnsServer& dns,
                                         absl::Duration timeout) {
  auto r = DnsResolver::Create({dns.address(), timeout});
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

TEST(DnsResolver, ResolvesEveryAddressOfAHeadlessService) {
  FakeDnsServer dns(
      {{"shoal-nodes.kube-system.svc.test",
        {V4("127.0.0.7"), V4("127.0.0.5"), V4("127.0.0.6"), V6("::1")}}});
  auto endpoints = ResolverFor(dns, absl::Seconds(5))
                       ->Resolve("shoal-nodes.kube-system.svc.test", 4001);
  ASSERT_TRUE(endpoints.ok()) << endpoints.status();
  std::vector<std::string> got;
  for (const auto& e : *endpoints) got.push_back(e.ToString());
  EXPECT_EQ(got, (std::vector<std::string>{"127.0.0.5:4001", "127.0.0.6:4001",
                                           "127.0.0.7:4001", "[::1]:4001"}));
}

TEST(DnsResolver, UnknownNameIsNotFound) {
  FakeDnsServer dns;
  auto r = ResolverFor(dns, absl::Seconds(5))->Resolve("missing.test", 4001);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
}

TEST(DnsResolver, SilentServerTimesOut) {
  FakeDnsServer dns({}, /*silent=*/true);
  absl::Time start = absl::Now();
  auto r = ResolverFor(dns, absl::Milliseconds(400))
               ->Resolve("slow.shoal.test", 4001);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(DnsResolver, BadArguments) {
  FakeDnsServer dns;
  auto resolver = ResolverFor(dns, absl::Seconds(1));
  EXPECT_EQ(resolver->Resolve("", 4001).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resolver->Resolve("a.test", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(
      DnsResolver::Create({"not a server list", absl::Seconds(1)}).ok());
}

}  // namespace
}  // namespace shoal::dht
