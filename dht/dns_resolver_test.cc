// DnsResolver against a small DNS server this test runs on loopback, so the
// real c-ares query path is exercised without touching any other network.
#include "dht/dns_resolver.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dht/fake_dns_server.h"
#include "gtest/gtest.h"

namespace shoal::dht {
namespace {

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
