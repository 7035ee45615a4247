#include "dht/rate_limiter.h"

#include <algorithm>

#include "glog/logging.h"

namespace shoal::dht {

TokenBucket::TokenBucket(double rate_per_second, double burst, absl::Time now)
    : rate_per_second_(rate_per_second),
      burst_(burst),
      tokens_(burst),
      updated_(now) {
  CHECK_GT(rate_per_second_, 0);
  CHECK_GE(burst_, 1);
}

double TokenBucket::TokensAt(absl::Time now) const {
  double elapsed_s =
      absl::ToDoubleSeconds(std::max(now - updated_, absl::ZeroDuration()));
  return std::min(burst_, tokens_ + elapsed_s * rate_per_second_);
}

bool TokenBucket::TryTake(absl::Time now) {
  tokens_ = TokensAt(now);
  updated_ = std::max(updated_, now);
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

bool TokenBucket::IsFull(absl::Time now) const {
  return TokensAt(now) >= burst_;
}

SourceRateLimiter::SourceRateLimiter(RateLimiterOptions options)
    : options_(options) {
  CHECK_GT(options_.max_sources, 0u);
}

bool SourceRateLimiter::Allow(const Endpoint& source, absl::Time now) {
  std::string address = source.AddressBytes();
  auto it = buckets_.find(address);
  if (it != buckets_.end()) return it->second.TryTake(now);

  if (buckets_.size() >= options_.max_sources &&
      now - last_sweep_ >= absl::Seconds(1)) {
    ForgetFullBuckets(now);
  }
  if (buckets_.size() >= options_.max_sources) return false;
  auto inserted = buckets_.emplace(
      address, TokenBucket(options_.rate_per_second, options_.burst, now));
  return inserted.first->second.TryTake(now);
}

void SourceRateLimiter::ForgetFullBuckets(absl::Time now) {
  last_sweep_ = now;
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    if (it->second.IsFull(now)) {
      buckets_.erase(it++);
    } else {
      ++it;
    }
  }
}

}  // namespace shoal::dht
