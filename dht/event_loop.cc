#include "dht/event_loop.h"

#include <errno.h>
#include <glog/logging.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace shoal::dht {

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create() {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    return absl::InternalError(
        absl::StrCat("epoll_create1: ", strerror(errno)));
  }
  int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    int err = errno;
    close(ep);
    return absl::InternalError(absl::StrCat("eventfd: ", strerror(err)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev) != 0) {
    int err = errno;
    close(wake);
    close(ep);
    return absl::InternalError(absl::StrCat("epoll_ctl: ", strerror(err)));
  }
  return std::unique_ptr<EventLoop>(new EventLoop(ep, wake));
}

EventLoop::~EventLoop() {
  Stop();
  close(wake_fd_);
  close(epoll_fd_);
}

void EventLoop::Start() {
  CHECK(!thread_.joinable()) << "event loop started twice";
  thread_ = std::thread([this] { Run(); });
}

void EventLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable()) {
    CHECK(!InLoopThread()) << "EventLoop::Stop() called from its own thread";
    thread_.join();
  }
}

void EventLoop::Post(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    posted_.push_back(std::move(fn));
  }
  Wake();
}

void EventLoop::Wake() {
  uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the loop will wake anyway.
  if (write(wake_fd_, &one, sizeof(one)) < 0 && errno != EAGAIN) {
    LOG_EVERY_T(ERROR, 60) << "dht: cannot wake event loop error="
                           << strerror(errno);
  }
}

absl::Status EventLoop::WatchReadable(int fd,
                                      std::function<void()> on_readable) {
  absl::MutexLock lock(&mu_);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return absl::InternalError(
        absl::StrCat("epoll_ctl add fd=", fd, ": ", strerror(errno)));
  }
  watched_[fd] =
      std::make_shared<std::function<void()>>(std::move(on_readable));
  return absl::OkStatus();
}

void EventLoop::Unwatch(int fd) {
  absl::MutexLock lock(&mu_);
  if (watched_.erase(fd) > 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

Clock::TimerId EventLoop::Schedule(absl::Duration delay,
                                   std::function<void()> callback) {
  DCHECK(!thread_.joinable() || InLoopThread());
  TimerId id = next_timer_id_++;
  absl::Time due = Now() + std::max(delay, absl::ZeroDuration());
  timers_.emplace(std::make_pair(due, id), std::move(callback));
  timer_due_[id] = due;
  return id;
}

bool EventLoop::Cancel(TimerId id) {
  DCHECK(!thread_.joinable() || InLoopThread());
  auto it = timer_due_.find(id);
  if (it == timer_due_.end()) return false;
  timers_.erase(std::make_pair(it->second, id));
  timer_due_.erase(it);
  return true;
}

void EventLoop::RunDueTimers(absl::Time now) {
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_due_.erase(node.key().second);
    node.mapped()();  // May schedule or cancel other timers.
  }
}

int EventLoop::NextTimeoutMs(absl::Time now) const {
  if (timers_.empty()) return -1;
  absl::Duration wait = timers_.begin()->first.first - now;
  if (wait <= absl::ZeroDuration()) return 0;
  // Round up, so a timer is never run early and never spins.
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(wait + absl::Milliseconds(1) -
                                                  absl::Nanoseconds(1)),
                        60 * 1000));
}

void EventLoop::RunPosted() {
  std::vector<std::function<void()>> work;
  {
    absl::MutexLock lock(&mu_);
    work.swap(posted_);
  }
  for (auto& fn : work) fn();
}

void EventLoop::Run() {
  constexpr int kMaxEvents = 32;
  epoll_event events[kMaxEvents];
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, NextTimeoutMs(Now()));
    if (n < 0 && errno != EINTR) {
      LOG_EVERY_T(ERROR, 60)
          << "dht: epoll_wait failed error=" << strerror(errno);
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t count;
        while (read(wake_fd_, &count, sizeof(count)) > 0) {
        }
        continue;
      }
      std::shared_ptr<std::function<void()>> cb;
      {
        absl::MutexLock lock(&mu_);
        auto it = watched_.find(fd);
        if (it != watched_.end()) cb = it->second;
      }
      if (cb) (*cb)();
    }
    RunPosted();
    RunDueTimers(Now());
  }
}

}  // namespace shoal::dht
