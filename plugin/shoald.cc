// shoald: Shoal's node daemon. Serves containerd's content API on a unix
// socket, storing blobs in containerd's own layout, so containerd can use it
// as a proxy content plugin in place of its built-in store.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdlib>
#include <map>
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
#include "dht/codec.h"
#include "dht/endpoint.h"
#include "dht/node.h"
#include "plugin/advertiser.h"
#include "plugin/fetcher.h"
#include "plugin/http_server.h"
#include "plugin/metrics.h"
#include "plugin/node_metrics.h"
#include "plugin/peer_service.h"
#include "plugin/server.h"

DEFINE_string(socket, "/run/shoal/content.sock",
              "unix socket to serve containerd's content API on; containerd's "
              "[proxy_plugins.shoal] address");
DEFINE_string(root, "/var/lib/containerd/io.containerd.content.v1.content",
              "content store directory, in containerd's layout; the default "
              "is containerd's own, so existing images stay usable");
DEFINE_string(content_transport, "h2",
              "what serves --socket: \"h2\", shoald's own gRPC-over-HTTP/2 "
              "transport on libnghttp2 (less CPU per call: containerd opens "
              "one Read stream per 32 KiB it unpacks), or \"grpc\", gRPC "
              "C++'s server");
DEFINE_int32(shutdown_grace_seconds, 5,
             "on SIGTERM, how long running calls may finish before they are "
             "cancelled (their ingests stay resumable)");

DEFINE_string(dht_listen, "",
              "IP:port ([IPv6]:port) to run the DHT node on over UDP and to "
              "advertise stored blobs from; the IP must be one peers can "
              "reach (not 0.0.0.0). Empty: no DHT");
DEFINE_string(dht_bootstrap, "",
              "comma-separated DHT seeds to join through, each IP:port, "
              "[IPv6]:port or name:port (names resolved with the system's "
              "DNS, e.g. a headless Service); empty: this node starts a new "
              "network. Needs --dht_listen");
DEFINE_string(dht_reresolve_interval, "60s",
              "how often seed names in --dht_bootstrap are resolved again; "
              "the node bootstraps again when its routing table is empty or "
              "a new seed address appears");
DEFINE_string(dht_provider_ttl, "24h",
              "lifetime of this node's provider records in the DHT, as an "
              "absl duration (\"24h\", \"90m\"); whole seconds in [1s, 48h]");
DEFINE_string(peer_resolve_timeout, "20ms",
              "longest a DHT lookup for a blob containerd is about to "
              "download may take before the download goes to the registry "
              "(absl duration, (0, 10s])");
DEFINE_int64(peer_upload_bytes_per_second, 0,
             "cap on the bytes per second this node serves to other nodes, "
             "all streams together; 0: no cap");
DEFINE_int32(peer_max_streams_per_client, 4,
             "concurrent blob streams one other node may fetch from this one, "
             "and this node from one other (keep it equal across a cluster)");
DEFINE_bool(fault_corrupt_uploads, false,
            "TESTING ONLY: corrupt every blob served to peers, to prove that "
            "fetchers reject bad bytes");
DEFINE_string(metrics_listen, "",
              "IP:port ([IPv6]:port) to serve Prometheus metrics on at "
              "/metrics over HTTP; empty: no metrics endpoint");
DEFINE_string(dht_republish_interval, "6h",
              "how often this node re-announces every blob it advertises, as "
              "an absl duration; must be shorter than --dht_provider_ttl. "
              "\"0\" disables republishing");

namespace {

// The DHT's flags, parsed.
struct DhtConfig {
  std::string ip;
  uint16_t port = 0;
  std::vector<std::string> seeds;  // Checked by Advertiser::StartResolving.
  shoal::dht::NodeOptions node;
  absl::Duration resolve_timeout = absl::Milliseconds(20);
  // 60 s default: an isolated or restarted node (or one whose seeds all
  // restarted at new addresses) rejoins within a minute, at the cost of one
  // DNS query per name per minute.
  absl::Duration reresolve_interval = absl::Seconds(60);
};

// Parses a duration flag `--name=text`; INVALID_ARGUMENT names the flag.
absl::StatusOr<absl::Duration> ParseDurationFlag(absl::string_view name,
                                                 absl::string_view text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, ": \"", text, "\" is not a duration (e.g. \"6h\")"));
  }
  return d;
}

// Parses --dht_provider_ttl and --dht_republish_interval into `options`.
// The TTL must be whole seconds within the wire's [1 s, kMaxProviderTtl]
// (codec.h), and a republish interval at or past the TTL would let records
// lapse before they are renewed.
absl::Status ParseDhtDurations(absl::string_view ttl_text,
                               absl::string_view interval_text,
                               shoal::dht::NodeOptions& options) {
  absl::StatusOr<absl::Duration> ttl =
      ParseDurationFlag("dht_provider_ttl", ttl_text);
  if (!ttl.ok()) return ttl.status();
  absl::StatusOr<absl::Duration> interval =
      ParseDurationFlag("dht_republish_interval", interval_text);
  if (!interval.ok()) return interval.status();
  if (*ttl < absl::Seconds(1) || *ttl > shoal::dht::kMaxProviderTtl ||
      *ttl != absl::Trunc(*ttl, absl::Seconds(1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dht_provider_ttl: must be whole seconds in [1s, ",
                     absl::FormatDuration(shoal::dht::kMaxProviderTtl),
                     "], got ", absl::FormatDuration(*ttl)));
  }
  if (*interval < absl::ZeroDuration() || *interval >= *ttl) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dht_republish_interval: must be >= 0 and shorter than "
                     "--dht_provider_ttl (",
                     absl::FormatDuration(*ttl), "), got ",
                     absl::FormatDuration(*interval)));
  }
  options.provider_ttl = *ttl;
  options.republish_interval = *interval;
  return absl::OkStatus();
}

// Parses --dht_listen and --dht_bootstrap, then the duration flags;
// INVALID_ARGUMENT names the flag and the bad value.
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
    config.seeds.emplace_back(absl::StripAsciiWhitespace(seed));
  }
  absl::StatusOr<absl::Duration> reresolve =
      ParseDurationFlag("dht_reresolve_interval", FLAGS_dht_reresolve_interval);
  if (!reresolve.ok()) return reresolve.status();
  if (*reresolve <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--dht_reresolve_interval: must be positive");
  }
  config.reresolve_interval = *reresolve;
  absl::StatusOr<absl::Duration> resolve =
      ParseDurationFlag("peer_resolve_timeout", FLAGS_peer_resolve_timeout);
  if (!resolve.ok()) return resolve.status();
  if (*resolve <= absl::ZeroDuration() || *resolve > absl::Seconds(10)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--peer_resolve_timeout: must be in (0, 10s], got ",
                     absl::FormatDuration(*resolve)));
  }
  config.resolve_timeout = *resolve;
  absl::Status durations = ParseDhtDurations(
      FLAGS_dht_provider_ttl, FLAGS_dht_republish_interval, config.node);
  if (!durations.ok()) return durations;
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

  shoal::plugin::ContentTransport transport;
  if (FLAGS_content_transport == "h2") {
    transport = shoal::plugin::ContentTransport::kHttp2;
  } else if (FLAGS_content_transport == "grpc") {
    transport = shoal::plugin::ContentTransport::kGrpc;
  } else {
    LOG(ERROR) << "shoald: --content_transport must be h2 or grpc, got \""
               << FLAGS_content_transport << "\"";
    return 2;
  }
  if (FLAGS_peer_upload_bytes_per_second < 0 ||
      FLAGS_peer_max_streams_per_client < 1) {
    LOG(ERROR) << "shoald: --peer_upload_bytes_per_second must be >= 0 and "
                  "--peer_max_streams_per_client >= 1";
    return 2;
  }

  shoal::plugin::MetricsRegistry registry;
  shoal::plugin::NodeMetrics metrics(registry);
  absl::StatusOr<std::unique_ptr<shoal::plugin::BlobStore>> store =
      shoal::plugin::BlobStore::Open(FLAGS_root);
  if (!store.ok()) {
    LOG(ERROR) << "shoald: cannot open store root=" << FLAGS_root
               << " error=" << store.status();
    return 1;
  }
  shoal::plugin::BlobStore* blobs = store->get();

  // Destroyed in reverse: the servers first (no more calls), then the
  // fetcher and the advertiser they call into, then the store.
  std::unique_ptr<shoal::plugin::Advertiser> advertiser;
  std::unique_ptr<shoal::plugin::Fetcher> fetcher;
  std::unique_ptr<shoal::plugin::PeerService> peer_service;
  std::unique_ptr<grpc::Server> peer_server;
  if (dht.has_value()) {
    auto a = shoal::plugin::Advertiser::Create(dht->ip, dht->port, dht->node);
    if (!a.ok()) {
      LOG(ERROR) << "shoald: cannot start dht error=" << a.status();
      return 1;
    }
    advertiser = *std::move(a);
    const shoal::dht::Endpoint self = advertiser->endpoint();
    LOG(INFO) << "shoald: dht listening endpoint=" << self.ToString()
              << " seeds=" << dht->seeds.size() << " provider_ttl="
              << absl::FormatDuration(dht->node.provider_ttl)
              << " republish_interval="
              << absl::FormatDuration(dht->node.republish_interval);

    // The peer service listens on TCP at the DHT's address and port, so a
    // provider record's endpoint names both.
    shoal::plugin::PeerServiceOptions peer_options;
    peer_options.max_streams_per_peer = FLAGS_peer_max_streams_per_client;
    peer_options.upload_bytes_per_second = FLAGS_peer_upload_bytes_per_second;
    peer_options.corrupt_uploads = FLAGS_fault_corrupt_uploads;
    peer_service = std::make_unique<shoal::plugin::PeerService>(
        blobs, peer_options, &metrics);
    grpc::ServerBuilder builder;
    // Without this gRPC sets SO_REUSEPORT, and a second shoald on the same
    // address would silently share the port.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    int bound_port = 0;
    builder.AddListeningPort(self.ToString(), grpc::InsecureServerCredentials(),
                             &bound_port);
    builder.RegisterService(peer_service.get());
    peer_server = builder.BuildAndStart();
    if (peer_server == nullptr || bound_port != self.port()) {
      LOG(ERROR) << "shoald: cannot serve peers on tcp " << self.ToString()
                 << " (in use?)";
      return 1;
    }
    LOG(INFO) << "shoald: serving peers tcp=" << self.ToString()
              << " upload_limit_bytes_per_second="
              << FLAGS_peer_upload_bytes_per_second
              << " max_streams_per_client="
              << FLAGS_peer_max_streams_per_client;

    shoal::plugin::FetcherOptions fetch_options;
    fetch_options.resolve_timeout = dht->resolve_timeout;
    // Nodes of one cluster run with the same flags: ask no peer for more
    // streams than this node would grant.
    fetch_options.max_streams_per_peer = FLAGS_peer_max_streams_per_client;
    fetch_options.self = self;
    fetcher = std::make_unique<shoal::plugin::Fetcher>(blobs, advertiser.get(),
                                                       &metrics, fetch_options);

    absl::Status started =
        advertiser->StartResolving(dht->seeds, {}, dht->reresolve_interval);
    if (!started.ok()) {
      LOG(ERROR) << "shoald: bad flag error=--dht_bootstrap: " << started;
      return started.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
  } else if (FLAGS_fault_corrupt_uploads) {
    LOG(ERROR) << "shoald: --fault_corrupt_uploads needs --dht_listen";
    return 2;
  }

  shoal::plugin::Gauge* store_blobs = registry.GetGauge(
      "shoal_store_blobs", "Committed blobs in the content store.");
  shoal::plugin::Gauge* store_bytes = registry.GetGauge(
      "shoal_store_bytes", "Bytes of committed blobs in the content store.");
  std::unique_ptr<shoal::plugin::HttpServer> http;
  if (!FLAGS_metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<shoal::plugin::HttpServer>> started =
        shoal::plugin::HttpServer::Start(
            FLAGS_metrics_listen,
            {{"/metrics", [&registry, blobs, store_blobs, store_bytes](
                              const std::string&,
                              const std::map<std::string, std::string>&) {
                // One listing of the store per scrape, for both gauges.
                absl::StatusOr<std::vector<shoal::plugin::BlobInfo>> all =
                    blobs->List();
                if (all.ok()) {
                  double bytes = 0;
                  for (const auto& b : *all) {
                    bytes += static_cast<double>(b.size);
                  }
                  store_blobs->Set(static_cast<double>(all->size()));
                  store_bytes->Set(bytes);
                } else {
                  LOG_EVERY_T(WARNING, 60)
                      << "shoald: cannot list the store for metrics error="
                      << all.status() << " (rate limited)";
                }
                shoal::plugin::HttpServer::Response r;
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r.body = registry.Render();
                return r;
              }}});
    if (!started.ok()) {
      LOG(ERROR) << "shoald: cannot serve metrics error=" << started.status();
      return started.status().code() == absl::StatusCode::kInvalidArgument ? 2
                                                                           : 1;
    }
    http = *std::move(started);
  }

  auto server =
      shoal::plugin::ContentServer::Start(FLAGS_socket, blobs, advertiser.get(),
                                          fetcher.get(), &metrics, transport);
  if (!server.ok()) {
    LOG(ERROR) << "shoald: cannot start error=" << server.status();
    return 1;
  }
  LOG(INFO) << "shoald: serving socket=" << FLAGS_socket
            << " root=" << FLAGS_root
            << " transport=" << FLAGS_content_transport;
  if (advertiser != nullptr) {
    // After the server started, so a blob committed in between is at worst
    // advertised twice, never missed.
    absl::Status st = advertiser->AdvertiseStored(*blobs);
    if (!st.ok()) {
      LOG(WARNING) << "shoald: cannot list stored blobs to advertise error="
                   << st;
    }
  }

  int sig = 0;
  sigwait(&stop, &sig);
  LOG(INFO) << "shoald: stopping signal=" << strsignal(sig);
  const absl::Duration grace = absl::Seconds(FLAGS_shutdown_grace_seconds);
  // Peer transfers first: a STAT waiting on one would hold the content
  // server's shutdown for as long as the blob takes.
  if (fetcher != nullptr) fetcher->Shutdown();
  (*server)->Shutdown(grace);
  server->reset();
  if (peer_server != nullptr) {
    peer_service->PrepareShutdown();
    peer_server->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    peer_server->Wait();
  }
  http.reset();
  peer_server.reset();
  fetcher.reset();
  peer_service.reset();
  advertiser.reset();
  LOG(INFO) << "shoald: stopped";
  return 0;
}
