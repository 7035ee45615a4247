#include "dht/dht.h"

#include <glog/logging.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace shoal::dht {
namespace {

// One FindProviders call's outcome, shared by the lookup's callback and the
// deadline timer; whichever comes first takes `done`, the other finds it
// empty. Loop thread only, so no lock.
struct FindOnce {
  Dht::FindProvidersCallback done;
  Clock::TimerId timer = Clock::kNoTimer;

  void Finish(absl::StatusOr<FindProvidersResult> result) {
    if (done == nullptr) return;
    Dht::FindProvidersCallback callback = std::move(done);
    done = nullptr;
    callback(std::move(result));
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Dht>> Dht::Create(const std::string& ip,
                                                 uint16_t port,
                                                 NodeOptions options) {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
  if (!loop.ok()) return loop.status();
  std::unique_ptr<Dht> dht(new Dht(*std::move(loop)));
  dht->loop_->Start();

  // The transport, the node and gen_ live on the loop thread from the start.
  absl::Status status;
  Dht* self = dht.get();
  dht->RunOnLoopAndWait([&] {
    absl::StatusOr<std::unique_ptr<UdpTransport>> transport =
        UdpTransport::Create(self->loop_.get(), ip, port);
    if (!transport.ok()) {
      status = transport.status();
      return;
    }
    self->transport_ = *std::move(transport);
    self->endpoint_ = self->transport_->local_endpoint();
    self->node_ =
        std::make_unique<Node>(NodeId::Random(self->gen_), *self->transport_,
                               *self->loop_, self->gen_, std::move(options));
  });
  if (!status.ok()) return status;  // ~Dht stops the loop.
  return dht;
}

Dht::~Dht() {
  // The node's timers and the transport's read watch belong to the loop
  // thread; see udp_transport.h. Deadline timers still pending find node_
  // null and do nothing until Stop() drops them.
  RunOnLoopAndWait([this] {
    node_.reset();
    transport_.reset();
  });
  loop_->Stop();
}

void Dht::RunOnLoopAndWait(std::function<void()> fn) {
  DCHECK(!loop_->InLoopThread());
  absl::Notification done;
  loop_->Post([&] {
    fn();
    done.Notify();
  });
  done.WaitForNotification();
}

void Dht::RunOnLoop(std::function<void(Node&)> fn) {
  loop_->Post([this, fn = std::move(fn)] {
    if (node_ != nullptr) fn(*node_);
  });
}

void Dht::Bootstrap(std::vector<Endpoint> seeds, DoneCallback done) {
  RunOnLoop([seeds = std::move(seeds), done = std::move(done)](Node& node) {
    node.Bootstrap(seeds, done);
  });
}

void Dht::Provide(std::vector<NodeId> keys, DoneCallback done) {
  RunOnLoop([keys = std::move(keys), done = std::move(done)](Node& node) {
    node.Provide(keys, done);
  });
}

void Dht::Withdraw(std::vector<NodeId> keys, DoneCallback done) {
  RunOnLoop([keys = std::move(keys), done = std::move(done)](Node& node) {
    node.Withdraw(keys, done);
  });
}

void Dht::FindProviders(const NodeId& key, absl::Duration deadline,
                        FindProvidersCallback done) {
  const absl::Time due = deadline == absl::InfiniteDuration()
                             ? absl::InfiniteFuture()
                             : absl::Now() + deadline;
  RunOnLoop([this, key, deadline, due, done = std::move(done)](Node& node) {
    auto once = std::make_shared<FindOnce>();
    once->done = std::move(done);
    if (due != absl::InfiniteFuture()) {
      const absl::Duration left =
          std::max(due - loop_->Now(), absl::ZeroDuration());
      once->timer = loop_->Schedule(left, [this, once, deadline] {
        once->timer = Clock::kNoTimer;
        if (node_ == nullptr) return;  // Tearing down: drop, as documented.
        once->Finish(absl::DeadlineExceededError(
            absl::StrCat("dht: FindProviders did not finish within ",
                         absl::FormatDuration(deadline))));
      });
    }
    node.FindProviders(key, [this, once](FindProvidersResult result) {
      if (once->timer != Clock::kNoTimer) loop_->Cancel(once->timer);
      once->timer = Clock::kNoTimer;
      once->Finish(std::move(result));
    });
  });
}

}  // namespace shoal::dht
