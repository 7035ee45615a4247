// The DHT's production event loop: one thread running epoll, which fires
// timers (it is the Clock), calls back on readable file descriptors, and runs
// work posted from other threads. Everything it calls runs on that thread, so
// the DHT core needs no locks. Thread-safe where stated; the rest is for the
// loop thread only.
#ifndef SHOAL_DHT_EVENT_LOOP_H_
#define SHOAL_DHT_EVENT_LOOP_H_

#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "dht/transport.h"

namespace shoal::dht {

class EventLoop : public Clock {
 public:
  // Creates the epoll and wake-up descriptors; the thread starts in Start().
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create();

  // Stops the thread (see Stop()) and closes the descriptors.
  ~EventLoop() override;
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Starts the loop thread. Call once.
  void Start();
  // Thread-safe, idempotent: asks the loop to return and joins it. Posted
  // work and timers not yet run are dropped. Not from the loop thread.
  void Stop();

  // Thread-safe: runs `fn` on the loop thread soon, after work posted before
  // it. Dropped if the loop has stopped.
  void Post(std::function<void()> fn);

  // Thread-safe: calls `on_readable` on the loop thread whenever `fd` is
  // readable (level-triggered) until Unwatch(fd). `fd` must stay open until
  // then.
  absl::Status WatchReadable(int fd, std::function<void()> on_readable);
  void Unwatch(int fd);

  bool InLoopThread() const {
    return std::this_thread::get_id() == thread_.get_id();
  }

  // Clock, for the loop thread (or before Start()).
  absl::Time Now() const override { return absl::Now(); }
  TimerId Schedule(absl::Duration delay,
                   std::function<void()> callback) override;
  bool Cancel(TimerId id) override;

 private:
  EventLoop(int epoll_fd, int wake_fd)
      : epoll_fd_(epoll_fd), wake_fd_(wake_fd) {}

  void Run();
  void Wake();
  // Runs every timer due at or before `now`, earliest first.
  void RunDueTimers(absl::Time now);
  // Milliseconds epoll may sleep before the next timer is due (-1: none).
  int NextTimeoutMs(absl::Time now) const;
  void RunPosted();

  const int epoll_fd_;
  const int wake_fd_;  // eventfd: Post() and Stop() wake epoll_wait.
  std::thread thread_;

  // Loop thread only. Ordered by due time, then scheduling order.
  TimerId next_timer_id_ = 1;
  std::map<std::pair<absl::Time, TimerId>, std::function<void()>> timers_;
  absl::flat_hash_map<TimerId, absl::Time> timer_due_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int, std::shared_ptr<std::function<void()>>> watched_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_EVENT_LOOP_H_
