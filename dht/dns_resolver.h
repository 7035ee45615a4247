// Resolves bootstrap names to endpoints with c-ares: a Kubernetes headless
// Service name returns one A/AAAA record per node, so every node can find
// others without a static list. Blocking; call it off the DHT's event-loop
// thread and post the result back. Thread-compatible: one call at a time
// per resolver.
#ifndef SHOAL_DHT_DNS_RESOLVER_H_
#define SHOAL_DHT_DNS_RESOLVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dht/endpoint.h"

struct ares_channeldata;

namespace shoal::dht {

struct DnsResolverOptions {
  // "host:port" of DNS servers to ask, comma-separated in c-ares' CSV form;
  // empty: the system's (/etc/resolv.conf).
  std::string servers;
  // Whole-resolution deadline. Two seconds covers a retry to a second
  // server; bootstrap re-resolves periodically anyway.
  absl::Duration timeout = absl::Seconds(2);
};

class DnsResolver {
 public:
  static absl::StatusOr<std::unique_ptr<DnsResolver>> Create(
      const DnsResolverOptions& options);
  ~DnsResolver();
  DnsResolver(const DnsResolver&) = delete;
  DnsResolver& operator=(const DnsResolver&) = delete;

  // Every IPv4 and IPv6 address of `name`, as endpoints with `port`, sorted
  // and without duplicates. NOT_FOUND when the name has no addresses,
  // DEADLINE_EXCEEDED when no answer came in time, UNAVAILABLE for other
  // resolver failures, INVALID_ARGUMENT for an empty name or port 0.
  absl::StatusOr<std::vector<Endpoint>> Resolve(const std::string& name,
                                                uint16_t port);

 private:
  DnsResolver(ares_channeldata* channel, absl::Duration timeout)
      : channel_(channel), timeout_(timeout) {}

  ares_channeldata* const channel_;
  const absl::Duration timeout_;
};

// Maps a c-ares status code to absl::Status, naming `what` was resolved.
absl::Status AresToStatus(int ares_status, const std::string& what);

}  // namespace shoal::dht

#endif  // SHOAL_DHT_DNS_RESOLVER_H_
