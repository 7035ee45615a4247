#include "plugin/upload_limiter.h"

#include <glog/logging.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace shoal::plugin {

UploadLimiter::UploadLimiter(int64_t bytes_per_second, int64_t burst_bytes)
    : bytes_per_second_(static_cast<double>(bytes_per_second)),
      burst_(absl::Seconds(static_cast<double>(burst_bytes) /
                           static_cast<double>(bytes_per_second))),
      thread_([this] { Run(); }) {
  CHECK_GT(bytes_per_second, 0);
  CHECK_GT(burst_bytes, 0);
}

UploadLimiter::~UploadLimiter() {
  Stop();
  thread_.join();
}

void UploadLimiter::Stop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
  cv_.Signal();
}

absl::Duration UploadLimiter::Reserve(size_t n, absl::Time now) {
  absl::MutexLock lock(&mu_);
  absl::Time start = std::max(tat_, now);
  tat_ = start + absl::Seconds(static_cast<double>(n) / bytes_per_second_);
  // The bucket holds burst_ worth of bytes: a send may go as soon as the
  // link would be no more than that far behind.
  return std::max(absl::ZeroDuration(), tat_ - burst_ - now);
}

void UploadLimiter::Pace(size_t n, std::function<void()> send) {
  absl::Time now = absl::Now();
  absl::Duration wait = Reserve(n, now);
  {
    absl::MutexLock lock(&mu_);
    if (wait > absl::ZeroDuration() && !stop_) {
      waiting_.emplace(now + wait, std::move(send));
      cv_.Signal();
      return;
    }
  }
  send();
}

void UploadLimiter::Run() {
  while (true) {
    std::vector<std::function<void()>> due;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ ||
               (!waiting_.empty() && waiting_.begin()->first <= absl::Now());
      };
      while (!ready()) {
        // Pace() and the destructor signal when they add an earlier send or
        // stop; otherwise sleep until the first send is due.
        cv_.WaitWithDeadline(&mu_, waiting_.empty() ? absl::InfiniteFuture()
                                                    : waiting_.begin()->first);
      }
      auto end = stop_ ? waiting_.end() : waiting_.upper_bound(absl::Now());
      for (auto it = waiting_.begin(); it != end; ++it) {
        due.push_back(std::move(it->second));
      }
      waiting_.erase(waiting_.begin(), end);
      if (stop_ && due.empty()) return;
    }
    for (auto& send : due) send();
  }
}

}  // namespace shoal::plugin
