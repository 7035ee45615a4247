// A tiny DNS server on 127.0.0.1 for tests: answers A and AAAA queries from
// a fixed table on its own thread, so c-ares' real query path runs without
// touching any other network. Test-only; thread-safe (the table is fixed at
// construction).
#ifndef SHOAL_DHT_FAKE_DNS_SERVER_H_
#define SHOAL_DHT_FAKE_DNS_SERVER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace shoal::dht {

// Answers A and AAAA queries for the names in `records` (addresses as raw 4-
// or 16-byte strings, see V4/V6); NXDOMAIN for others; nothing at all when
// `silent`.
class FakeDnsServer {
 public:
  explicit FakeDnsServer(
      std::map<std::string, std::vector<std::string>> records = {},
      bool silent = false);
  ~FakeDnsServer();
  FakeDnsServer(const FakeDnsServer&) = delete;
  FakeDnsServer& operator=(const FakeDnsServer&) = delete;

  // "127.0.0.1:port", for DnsResolverOptions::servers.
  std::string address() const;

 private:
  void Serve();
  std::string Answer(const std::string& query);

  // Set before the serving thread starts; read-only after.
  const std::map<std::string, std::vector<std::string>> records_;
  const bool silent_;
  int fd_;
  uint16_t port_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Raw address bytes of an IPv4 or IPv6 literal, for the records table.
std::string V4(const char* s);
std::string V6(const char* s);

}  // namespace shoal::dht

#endif  // SHOAL_DHT_FAKE_DNS_SERVER_H_
