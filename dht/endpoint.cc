#include "dht/endpoint.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace shoal::dht {
namespace {

absl::Status CheckPort(uint32_t port) {
  if (port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port must be in [1, 65535], got ", port));
  }
  return absl::OkStatus();
}

// Splits "host:port" or "[host]:port" into host and port text.
absl::Status SplitHostPort(absl::string_view text, std::string* host,
                           absl::string_view* port) {
  size_t colon;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint \"", text, "\" has '[' without ']'"));
    }
    *host = std::string(text.substr(1, close - 1));
    colon = close + 1;
    if (colon >= text.size() || text[colon] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint \"", text, "\" lacks ':port' after ']'"));
    }
  } else {
    colon = text.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint \"", text, "\" lacks ':port'"));
    }
    *host = std::string(text.substr(0, colon));
    if (host->find(':') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "endpoint \"", text, "\": IPv6 addresses need [brackets]"));
    }
  }
  *port = text.substr(colon + 1);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Endpoint> Endpoint::FromBytes(absl::string_view address,
                                             uint32_t port) {
  if (address.size() != 4 && address.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("address must be 4 or 16 bytes, got ", address.size()));
  }
  absl::Status port_status = CheckPort(port);
  if (!port_status.ok()) return port_status;
  if (std::all_of(address.begin(), address.end(),
                  [](char c) { return c == 0; })) {
    return absl::InvalidArgumentError("address is unspecified (all zero)");
  }

  Endpoint e;
  e.family_ = address.size() == 4 ? Family::kIpv4 : Family::kIpv6;
  std::copy(address.begin(), address.end(), e.address_.begin());
  e.port_ = static_cast<uint16_t>(port);
  return e;
}

absl::StatusOr<Endpoint> Endpoint::Parse(absl::string_view text) {
  std::string host;
  absl::string_view port_text;
  absl::Status split = SplitHostPort(text, &host, &port_text);
  if (!split.ok()) return split;

  uint32_t port = 0;
  if (port_text.empty() || !absl::SimpleAtoi(port_text, &port) ||
      !std::all_of(port_text.begin(), port_text.end(), ::isdigit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint \"", text, "\" has port \"", port_text,
                     "\", not a decimal number in [1, 65535]"));
  }
  unsigned char buf[16];
  bool is_v6 = host.find(':') != std::string::npos;
  if (inet_pton(is_v6 ? AF_INET6 : AF_INET, host.c_str(), buf) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint \"", text, "\" has invalid IPv",
                     is_v6 ? "6" : "4", " address \"", host, "\""));
  }
  absl::StatusOr<Endpoint> e = FromBytes(
      absl::string_view(reinterpret_cast<char*>(buf), is_v6 ? 16 : 4), port);
  if (!e.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint \"", text, "\": ", e.status().message()));
  }
  return e;
}

std::string Endpoint::AddressBytes() const {
  return std::string(reinterpret_cast<const char*>(address_.data()),
                     family_ == Family::kIpv4 ? 4 : 16);
}

std::string Endpoint::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  bool v4 = family_ == Family::kIpv4;
  // inet_ntop only fails for an unknown family or a short buffer.
  inet_ntop(v4 ? AF_INET : AF_INET6, address_.data(), buf, sizeof(buf));
  return v4 ? absl::StrCat(buf, ":", port_)
            : absl::StrCat("[", buf, "]:", port_);
}

}  // namespace shoal::dht
