// shoald: Shoal's node daemon. Serves containerd's content API on a unix
// socket, storing blobs in containerd's own layout, so containerd can use it
// as a proxy content plugin in place of its built-in store.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <signal.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "dht/endpoint.h"
#include "plugin/advertiser.h"
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

DEFINE_string(dht_listen, "",
              "IP:port ([IPv6]:port) to run the DHT node on over UDP and to "
              "advertise stored blobs from; the IP must be one peers can "
              "reach (not 0.0.0.0). Empty: no DHT");
DEFINE_string(dht_bootstrap, "",
              "comma-separated IP:port DHT seeds to join through; empty: "
              "this node starts a new network. Needs --dht_listen");

namespace {

// The DHT's flags, parsed.
struct DhtConfig {
  std::string ip;
  uint16_t port = 0;
  std::vector<shoal::dht::Endpoint> seeds;
};

// Parses --dht_listen and --dht_bootstrap; INVALID_ARGUMENT names the flag
// and the bad value.
absl::StatusOr<DhtConfig> ParseDhtFlags(absl::string_view listen,
                                        absl::string_view bootstrap) {
  DhtConfig config;
  absl::StatusOr<shoal::dht::Endpoint> ep = shoal::dht::Endpoint::Parse(listen);
  if (!ep.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dht_listen: ", ep.status().message()));
  }
  // Endpoint::Parse accepted "ip:port" or "[ip]:port"; keep the IP text.
  absl::string_view ip = listen.substr(0, listen.rfind(':'));
  if (!ip.empty() && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
  config.ip = std::string(ip);
  config.port = ep->port();
  for (absl::string_view seed :
       absl::StrSplit(bootstrap, ',', absl::SkipWhitespace())) {
    absl::StatusOr<shoal::dht::Endpoint> s =
        shoal::dht::Endpoint::Parse(absl::StripAsciiWhitespace(seed));
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--dht_bootstrap: ", s.status().message()));
    }
    config.seeds.push_back(*s);
  }
  return config;
}

}  // namespace

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
  absl::optional<DhtConfig> dht;  // Empty: the DHT is off.
  if (!FLAGS_dht_listen.empty()) {
    absl::StatusOr<DhtConfig> parsed =
        ParseDhtFlags(FLAGS_dht_listen, FLAGS_dht_bootstrap);
    if (!parsed.ok()) {
      LOG(ERROR) << "shoald: bad flag error=" << parsed.status();
      return 2;
    }
    dht = *std::move(parsed);
  } else if (!FLAGS_dht_bootstrap.empty()) {
    LOG(ERROR) << "shoald: --dht_bootstrap needs --dht_listen";
    return 2;
  }

  // Block the stop signals before any thread starts, then wait for them here.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // The advertiser outlives the server, which reports commits and deletes
  // to it.
  std::unique_ptr<shoal::plugin::Advertiser> advertiser;
  if (dht.has_value()) {
    auto a = shoal::plugin::Advertiser::Create(dht->ip, dht->port);
    if (!a.ok()) {
      LOG(ERROR) << "shoald: cannot start dht error=" << a.status();
      return 1;
    }
    advertiser = *std::move(a);
    LOG(INFO) << "shoald: dht listening endpoint="
              << advertiser->endpoint().ToString()
              << " seeds=" << dht->seeds.size();
    advertiser->Start(dht->seeds);
  }

  auto server = shoal::plugin::ContentServer::Start(FLAGS_socket, FLAGS_root,
                                                    advertiser.get());
  if (!server.ok()) {
    LOG(ERROR) << "shoald: cannot start error=" << server.status();
    return 1;
  }
  LOG(INFO) << "shoald: serving socket=" << FLAGS_socket
            << " root=" << FLAGS_root;
  if (advertiser != nullptr) {
    // After the server started, so a blob committed in between is at worst
    // advertised twice, never missed.
    absl::Status st = advertiser->AdvertiseStored((*server)->store());
    if (!st.ok()) {
      LOG(WARNING) << "shoald: cannot list stored blobs to advertise error="
                   << st;
    }
  }

  int sig = 0;
  sigwait(&stop, &sig);
  LOG(INFO) << "shoald: stopping signal=" << strsignal(sig);
  (*server)->Shutdown(absl::Seconds(FLAGS_shutdown_grace_seconds));
  server->reset();
  advertiser.reset();
  LOG(INFO) << "shoald: stopped";
  return 0;
}
