// Caps the rate of all peer uploads together, so a node serving many peers
// leaves room on its uplink for its own pods. A token bucket in its GCRA
// form (one "theoretical arrival time" instead of a token count), plus one
// thread that runs the sends that must wait. Thread-safe.
#ifndef SHOAL_PLUGIN_UPLOAD_LIMITER_H_
#define SHOAL_PLUGIN_UPLOAD_LIMITER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace shoal::plugin {

class UploadLimiter {
 public:
  // At most `bytes_per_second` (> 0) on average, with bursts of up to
  // `burst_bytes` (> 0) sent at once.
  UploadLimiter(int64_t bytes_per_second, int64_t burst_bytes);
  // Stop(), then joins the thread.
  ~UploadLimiter();
  UploadLimiter(const UploadLimiter&) = delete;
  UploadLimiter& operator=(const UploadLimiter&) = delete;

  // Runs `send` once `n` more bytes fit under the cap: at once on this
  // thread when they do now, else later on the limiter's thread.
  void Pace(size_t n, std::function<void()> send);

  // Lifts the cap for good: every waiting send runs now and later ones at
  // once, so a server shutting down is not held up by paced streams (their
  // writes then fail fast). Idempotent.
  void Stop();

  // How long a send of `n` bytes asked for now would wait, and reserves it.
  // Exposed for tests.
  absl::Duration Reserve(size_t n, absl::Time now);

 private:
  void Run();

  const double bytes_per_second_;
  const absl::Duration burst_;  // burst_bytes at the rate.

  absl::Mutex mu_;
  // When the link would be idle again had every reserved byte been sent at
  // exactly the rate.
  absl::Time tat_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::multimap<absl::Time, std::function<void()>> waiting_
      ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar cv_;    // Signalled when waiting_ gains a first entry or stop_.
  std::thread thread_;  // Last: starts after the members it uses.
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_UPLOAD_LIMITER_H_
