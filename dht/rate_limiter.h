// Token-bucket rate limiting of incoming DHT requests, per source address.
// Owned by the RPC layer and used only on the event-loop thread: not
// thread-safe, takes no locks. Time is passed in; there is no clock inside.
#ifndef SHOAL_DHT_RATE_LIMITER_H_
#define SHOAL_DHT_RATE_LIMITER_H_

#include <cstddef>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "dht/endpoint.h"

namespace shoal::dht {

// A classic token bucket: holds up to `burst` tokens, refills at
// `rate_per_second`, and each admitted event takes one token.
class TokenBucket {
 public:
  // Starts full at `now`. Requires rate_per_second > 0 and burst >= 1.
  TokenBucket(double rate_per_second, double burst, absl::Time now);

  // Takes a token if one is available at `now`. Time going backwards is
  // treated as no time passing.
  bool TryTake(absl::Time now);

  // True if the bucket has refilled to `burst` by `now`, i.e. it is
  // indistinguishable from a new one.
  bool IsFull(absl::Time now) const;

 private:
  double TokensAt(absl::Time now) const;

  double rate_per_second_;
  double burst_;
  double tokens_;
  absl::Time updated_;
};

struct RateLimiterOptions {
  // Sustained requests per second admitted from one address. A lookup sends
  // a node one request per hop; a busy peer running tens of lookups a second
  // stays far below 100.
  double rate_per_second = 100;
  // Requests one address may send at once. A republish of 10,000 keys is 313
  // ADD_PROVIDER messages of 32 keys; in a small cluster one node can be
  // among the k closest for all of them, and 400 admits that burst.
  double burst = 400;
  // Addresses tracked at once. Each costs about 100 bytes, so 10,000 is
  // ~1 MB: a cluster of thousands of nodes fits with room to spare.
  size_t max_sources = 10000;
};

// One TokenBucket per source IP address (ports ignored, so a peer cannot
// escape its limit by changing source port).
class SourceRateLimiter {
 public:
  explicit SourceRateLimiter(RateLimiterOptions options = {});

  // True if a request from `source` at `now` is admitted. When max_sources
  // addresses are tracked, buckets that have refilled are forgotten (at most
  // once a second, as it scans them all); if none has, a new address is
  // refused.
  // TODO: with spoofed source addresses an attacker can fill the table and
  // lock out addresses not yet seen until their buckets refill (burst /
  // rate = 4 s after the flood stops); a per-prefix limit would bound that.
  bool Allow(const Endpoint& source, absl::Time now);

  // Addresses currently tracked.
  size_t tracked_sources() const { return buckets_.size(); }

 private:
  void ForgetFullBuckets(absl::Time now);

  // Set at construction.
  const RateLimiterOptions options_;

  // Keyed by the 4 or 16 address bytes; the length tells the family apart.
  absl::flat_hash_map<std::string, TokenBucket> buckets_;
  absl::Time last_sweep_ = absl::InfinitePast();
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_RATE_LIMITER_H_
