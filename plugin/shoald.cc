// shoald: Shoal's node daemon. Serves containerd's content API on a unix
// socket, storing blobs in containerd's own layout, so containerd can use it
// as a proxy content plugin in place of its built-in store.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <signal.h>

#include <cstdlib>

#include "absl/time/time.h"
#include "plugin/server.h"

DEFINE_string(socket, "/run/shoal/content.sock",
              "unix socket to serve containerd's content API on; containerd's "
              "[proxy_plugins.shoal] address");
DEFINE_string(root, "/var/lib/containerd/io.containerd.content.v1.content",
              "content store directory, in containerd's layout; the default "
              "is containerd's own, so existing images stay usable");
DEFINE_int32(shutdown_grace_seconds, 5,
             "on SIGTERM, how long running calls may finish before they are "
             "cancelled (their ingests stay resumable)");

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "shoald --socket=PATH --root=DIR: containerd proxy content store");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (argc > 1) {
    fprintf(stderr, "shoald: unexpected argument \"%s\"; see --help\n",
            argv[1]);
    return 2;
  }
  // A daemon under systemd logs to stderr (the journal) unless told where.
  if (FLAGS_log_dir.empty()) FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (FLAGS_shutdown_grace_seconds < 0) {
    LOG(ERROR) << "shoald: --shutdown_grace_seconds must be >= 0";
    return 2;
  }

  // Block the stop signals before any thread starts, then wait for them here.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = shoal::plugin::ContentServer::Start(FLAGS_socket, FLAGS_root);
  if (!server.ok()) {
    LOG(ERROR) << "shoald: cannot start error=" << server.status();
    return 1;
  }
  LOG(INFO) << "shoald: serving socket=" << FLAGS_socket
            << " root=" << FLAGS_root;

  int sig = 0;
  sigwait(&stop, &sig);
  LOG(INFO) << "shoald: stopping signal=" << strsignal(sig);
  (*server)->Shutdown(absl::Seconds(FLAGS_shutdown_grace_seconds));
  LOG(INFO) << "shoald: stopped";
  return 0;
}
