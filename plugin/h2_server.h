// shoald's own gRPC transport for the containerd socket: gRPC over HTTP/2
// on a unix socket, with libnghttp2 doing the HTTP/2 and one event-loop
// thread doing the I/O. It serves a ContentService and grpc.health.v1's
// Check, and replaces gRPC C++'s server there because containerd 1.6 opens
// one Read stream per 32 KiB it unpacks: gRPC C++ 1.51's server spent about
// 320 us of CPU per stream in a real unpack here, mostly on thread
// hand-offs, while here Read and Info are answered on the loop thread and a
// whole small reply (headers, message, trailers) leaves in one write, so
// containerd's reader wakes once: about 100 us (bench_pull, 2026-12-04).
//
// Every other call runs on a thread of its own: a Write stream may block for
// seconds in a fill from peers or a commit's fsync, and List, Delete, Status
// and Abort touch the disk. Those threads talk to the loop through a posted
// queue; they never touch nghttp2.
//
// Limits: requests of up to kMaxMessageBytes (16 MiB, containerd's), no
// compression (containerd sends none), health Watch is UNIMPLEMENTED (probes
// use Check).
//
// Thread-safe: SetServing and Shutdown may be called from any thread.
#ifndef SHOAL_PLUGIN_H2_SERVER_H_
#define SHOAL_PLUGIN_H2_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "plugin/content_service.h"

namespace shoal::plugin {

namespace h2_internal {
class Connection;
struct Call;
}  // namespace h2_internal

class H2Server {
 public:
  // Calls that get a thread of their own (Write, List, Update, Delete,
  // Status, ListStatuses, Abort) running at once; more are refused with
  // RESOURCE_EXHAUSTED rather than given a thread each. containerd runs a
  // few downloads per pull, so this is only a bound on a runaway client.
  static constexpr int kMaxRunningCalls = 512;

  // Listens on the unix socket `socket_path` (absolute; nothing may exist
  // there) and serves `service`, which must outlive the server. Health
  // starts as SERVING.
  static absl::StatusOr<std::unique_ptr<H2Server>> Start(
      const std::string& socket_path, ContentService* service,
      int max_running_calls = kMaxRunningCalls);

  ~H2Server();  // Shutdown(absl::ZeroDuration()).

  H2Server(const H2Server&) = delete;
  H2Server& operator=(const H2Server&) = delete;

  // What grpc.health.v1 Check answers: SERVING or NOT_SERVING.
  void SetServing(bool serving) { serving_ = serving; }

  // Stops accepting connections and tells clients (GOAWAY); calls still
  // running after `grace` are cancelled (a Write stream sees the end of its
  // messages, so its ingest stays resumable). Returns once every thread has
  // ended. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  friend class h2_internal::Connection;

  H2Server(ContentService* service, int max_running_calls)
      : service_(*service), max_running_calls_(max_running_calls) {}

  void Loop();
  void Accept();
  void RunPosted();
  // Runs `fn` on the loop thread (dropped once the loop has stopped).
  void Post(absl::AnyInvocable<void()> fn);
  // Runs `body` on a new thread, counted until it returns; false (and
  // `body` dropped) when max_running_calls_ are running already.
  bool SpawnWorker(absl::AnyInvocable<void()> body);
  void DestroyConnection(h2_internal::Connection* conn);
  void Wake();

  ContentService& service_;
  const int max_running_calls_;
  std::atomic<bool> serving_{true};

  // Set at start; closed by the loop thread when it ends.
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread loop_;

  // Loop thread only.
  absl::flat_hash_set<h2_internal::Connection*> connections_;
  bool draining_ = false;
  bool quit_ = false;

  absl::Mutex post_mu_;
  std::vector<absl::AnyInvocable<void()>> posted_ ABSL_GUARDED_BY(post_mu_);
  bool loop_stopped_ ABSL_GUARDED_BY(post_mu_) = false;

  // Open HTTP/2 streams, kept by the loop for Shutdown's wait.
  absl::Mutex calls_mu_;
  int open_calls_ ABSL_GUARDED_BY(calls_mu_) = 0;

  absl::Mutex workers_mu_;
  uint64_t next_worker_ ABSL_GUARDED_BY(workers_mu_) = 0;
  int running_workers_ ABSL_GUARDED_BY(workers_mu_) = 0;
  absl::flat_hash_map<uint64_t, std::thread> workers_
      ABSL_GUARDED_BY(workers_mu_);

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_H2_SERVER_H_
