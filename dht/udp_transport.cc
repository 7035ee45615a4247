#include "dht/udp_transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glog/logging.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace shoal::dht {
namespace {

// Fills `addr` from an IPv4 or IPv6 literal and a port; returns its length,
// or 0 when `ip` is neither.
socklen_t ToSockaddr(const std::string& ip, uint16_t port,
                     sockaddr_storage* addr) {
  memset(addr, 0, sizeof(*addr));
  auto* v4 = reinterpret_cast<sockaddr_in*>(addr);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    return sizeof(sockaddr_in);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(addr);
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    return sizeof(sockaddr_in6);
  }
  return 0;
}

socklen_t ToSockaddr(const Endpoint& ep, sockaddr_storage* addr) {
  memset(addr, 0, sizeof(*addr));
  std::string bytes = ep.AddressBytes();
  if (ep.family() == Endpoint::Family::kIpv4) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(addr);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(ep.port());
    memcpy(&v4->sin_addr, bytes.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(addr);
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(ep.port());
  memcpy(&v6->sin6_addr, bytes.data(), 16);
  return sizeof(sockaddr_in6);
}

absl::StatusOr<Endpoint> FromSockaddr(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(addr);
    return Endpoint::FromBytes(
        absl::string_view(reinterpret_cast<const char*>(&v4.sin_addr), 4),
        ntohs(v4.sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(addr);
    return Endpoint::FromBytes(
        absl::string_view(reinterpret_cast<const char*>(&v6.sin6_addr), 16),
        ntohs(v6.sin6_port));
  }
  return absl::InvalidArgumentError("not an IP address");
}

}  // namespace

absl::StatusOr<std::unique_ptr<UdpTransport>> UdpTransport::Create(
    EventLoop* loop, const std::string& ip, uint16_t port) {
  sockaddr_storage addr;
  socklen_t len = ToSockaddr(ip, port, &addr);
  if (len == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", ip, "\" is not an IPv4 or IPv6 address"));
  }
  int fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("socket: ", strerror(errno)));
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("bind ", ip, " port ", port, ": ", strerror(err)));
  }
  absl::StatusOr<Endpoint> local = FromSockaddr(addr);
  if (!local.ok()) {
    close(fd);
    return local.status();  // An unspecified address: not a peer endpoint.
  }
  std::unique_ptr<UdpTransport> t(new UdpTransport(loop, fd, *local));
  absl::Status watched =
      loop->WatchReadable(fd, [raw = t.get()] { raw->OnReadable(); });
  if (!watched.ok()) return watched;  // The destructor closes fd.
  return t;
}

UdpTransport::~UdpTransport() {
  loop_->Unwatch(fd_);
  close(fd_);
}

void UdpTransport::SetReceiveCallback(ReceiveCallback callback) {
  callback_ = std::move(callback);
}

absl::Status UdpTransport::Send(const Endpoint& to,
                                absl::string_view datagram) {
  if (datagram.size() > kMaxUdpPayloadBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("datagram of ", datagram.size(), " bytes exceeds ",
                     kMaxUdpPayloadBytes));
  }
  sockaddr_storage addr;
  socklen_t len = ToSockaddr(to, &addr);
  if (sendto(fd_, datagram.data(), datagram.size(), 0,
             reinterpret_cast<sockaddr*>(&addr), len) < 0) {
    // A full socket buffer drops the datagram, as the network may.
    if (errno == EAGAIN || errno == EWOULDBLOCK) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("sendto ", to.ToString(), ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

void UdpTransport::OnReadable() {
  // Bounded per wake-up so timers and other sockets get their turn.
  constexpr int kMaxPerWake = 64;
  char buf[kMaxUdpPayloadBytes + 1];
  for (int i = 0; i < kMaxPerWake; ++i) {
    sockaddr_storage from;
    socklen_t len = sizeof(from);
    ssize_t n = recvfrom(fd_, buf, sizeof(buf), MSG_TRUNC,
                         reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        LOG_EVERY_T(WARNING, 60)
            << "dht: udp receive failed error=" << strerror(errno)
            << " (rate limited)";
      }
      return;
    }
    absl::StatusOr<Endpoint> sender = FromSockaddr(from);
    if (static_cast<size_t>(n) > kMaxUdpPayloadBytes || !sender.ok()) {
      ++dropped_;
      continue;
    }
    if (callback_) callback_(*sender, absl::string_view(buf, n));
  }
}

}  // namespace shoal::dht
