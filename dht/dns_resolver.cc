#include "dht/dns_resolver.h"

#include <ares.h>
#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace shoal::dht {
namespace {

struct Query {
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<Endpoint> endpoints;
  uint16_t port = 0;
};

void OnAddrInfo(void* arg, int status, int /*timeouts*/,
                ares_addrinfo* result) {
  auto* q = static_cast<Query*>(arg);
  q->done = true;
  q->status = status;
  if (status != ARES_SUCCESS || result == nullptr) return;
  for (ares_addrinfo_node* n = result->nodes; n != nullptr; n = n->ai_next) {
    absl::StatusOr<Endpoint> ep;
    if (n->ai_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(n->ai_addr);
      ep = Endpoint::FromBytes(
          absl::string_view(reinterpret_cast<const char*>(&a->sin_addr), 4),
          q->port);
    } else if (n->ai_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(n->ai_addr);
      ep = Endpoint::FromBytes(
          absl::string_view(reinterpret_cast<const char*>(&a->sin6_addr), 16),
          q->port);
    }
    if (ep.ok()) q->endpoints.push_back(*ep);
  }
  ares_freeaddrinfo(result);
}

// Waits on c-ares' sockets until the query completes or `deadline` passes.
void Drive(ares_channel channel, const Query& q, absl::Time deadline) {
  while (!q.done) {
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    int mask = ares_getsock(channel, socks, ARES_GETSOCK_MAXNUM);
    pollfd fds[ARES_GETSOCK_MAXNUM];
    int n = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short events = (ARES_GETSOCK_READABLE(mask, i) ? POLLIN : 0) |
                     (ARES_GETSOCK_WRITABLE(mask, i) ? POLLOUT : 0);
      if (events != 0) fds[n++] = pollfd{socks[i], events, 0};
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return;
    timeval tv;
    timeval max_tv = absl::ToTimeval(left);
    timeval* wait = ares_timeout(channel, &max_tv, &tv);
    int timeout_ms =
        static_cast<int>(wait->tv_sec * 1000 + (wait->tv_usec + 999) / 1000);
    if (poll(fds, n, timeout_ms) <= 0) {
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // Timeouts.
      continue;
    }
    for (int i = 0; i < n; ++i) {
      ares_process_fd(channel,
                      fds[i].revents & (POLLIN | POLLERR | POLLHUP)
                          ? fds[i].fd
                          : ARES_SOCKET_BAD,
                      fds[i].revents & POLLOUT ? fds[i].fd : ARES_SOCKET_BAD);
    }
  }
}

}  // namespace

absl::Status AresToStatus(int ares_status, const std::string& what) {
  std::string msg =
      absl::StrCat("resolving ", what, ": ", ares_strerror(ares_status));
  switch (ares_status) {
    case ARES_SUCCESS:
      return absl::OkStatus();
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
      return absl::NotFoundError(msg);
    case ARES_ETIMEOUT:
      return absl::DeadlineExceededError(msg);
    case ARES_EBADNAME:
    case ARES_EBADFLAGS:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

absl::StatusOr<std::unique_ptr<DnsResolver>> DnsResolver::Create(
    const DnsResolverOptions& options) {
  static std::once_flag init_once;
  static int init_status = ARES_SUCCESS;
  std::call_once(init_once,
                 [] { init_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (init_status != ARES_SUCCESS) return AresToStatus(init_status, "init");

  ares_options opts{};
  // Per-try timeout; c-ares retries across servers within our deadline.
  opts.timeout = static_cast<int>(
      std::max<int64_t>(absl::ToInt64Milliseconds(options.timeout) / 2, 100));
  opts.tries = 2;
  ares_channel channel = nullptr;
  int st =
      ares_init_options(&channel, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
  if (st != ARES_SUCCESS) return AresToStatus(st, "init");
  if (!options.servers.empty()) {
    st = ares_set_servers_ports_csv(channel, options.servers.c_str());
    if (st != ARES_SUCCESS) {
      ares_destroy(channel);
      return AresToStatus(st,
                          absl::StrCat("servers \"", options.servers, "\""));
    }
  }
  return std::unique_ptr<DnsResolver>(
      new DnsResolver(channel, options.timeout));
}

DnsResolver::~DnsResolver() { ares_destroy(channel_); }

absl::StatusOr<std::vector<Endpoint>> DnsResolver::Resolve(
    const std::string& name, uint16_t port) {
  if (name.empty() || port == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve name \"", name, "\" port ", port));
  }
  Query q;
  q.port = port;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  ares_getaddrinfo(channel_, name.c_str(), nullptr, &hints, &OnAddrInfo, &q);
  Drive(channel_, q, absl::Now() + timeout_);
  if (!q.done) {
    ares_cancel(channel_);  // Runs the callback with ARES_ECANCELLED.
    return absl::DeadlineExceededError(
        absl::StrCat("resolving ", name, ": no answer within ",
                     absl::FormatDuration(timeout_)));
  }
  if (q.status != ARES_SUCCESS) return AresToStatus(q.status, name);
  std::sort(q.endpoints.begin(), q.endpoints.end(),
            [](const Endpoint& a, const Endpoint& b) {
              return a.ToString() < b.ToString();
            });
  q.endpoints.erase(std::unique(q.endpoints.begin(), q.endpoints.end()),
                    q.endpoints.end());
  if (q.endpoints.empty()) {
    return absl::NotFoundError(
        absl::StrCat("resolving ", name, ": no usable addresses"));
  }
  return q.endpoints;
}

}  // namespace shoal::dht
