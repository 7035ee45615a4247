#include "dht/fake_dns_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace shoal::dht {

FakeDnsServer::FakeDnsServer(
    std::map<std::string, std::vector<std::string>> records, bool silent)
    : records_(std::move(records)), silent_(silent) {
  fd_ = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Serve(); });
}

FakeDnsServer::~FakeDnsServer() {
  stop_ = true;
  thread_.join();
  close(fd_);
}

std::string FakeDnsServer::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

void FakeDnsServer::Serve() {
  char buf[512];
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    sockaddr_in from{};
    socklen_t len = sizeof(from);
    ssize_t n = recvfrom(fd_, buf, sizeof(buf), 0,
                         reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 17 || silent_) continue;
    std::string reply = Answer(std::string(buf, n));
    sendto(fd_, reply.data(), reply.size(), 0,
           reinterpret_cast<sockaddr*>(&from), len);
  }
}

std::string FakeDnsServer::Answer(const std::string& query) {
  // Question: labels from byte 12 to a zero byte, then type and class.
  size_t pos = 12;
  std::string name;
  while (pos < query.size() && query[pos] != 0) {
    int l = static_cast<unsigned char>(query[pos]);
    if (!name.empty()) name += '.';
    name += query.substr(pos + 1, l);
    pos += l + 1;
  }
  size_t question_end = pos + 5;
  int qtype = (static_cast<unsigned char>(query[pos + 1]) << 8) |
              static_cast<unsigned char>(query[pos + 2]);
  std::vector<std::string> answers;
  auto it = records_.find(absl::AsciiStrToLower(name));
  if (it != records_.end()) {
    for (const auto& a : it->second) {
      if ((qtype == 1 && a.size() == 4) || (qtype == 28 && a.size() == 16)) {
        answers.push_back(a);
      }
    }
  }
  std::string r = query.substr(0, question_end);
  r[2] = static_cast<char>(0x81);  // Response, recursion desired.
  r[3] = static_cast<char>(it == records_.end() ? 0x83 : 0x80);  // NXDOMAIN
  r[6] = 0;
  r[7] = static_cast<char>(answers.size());
  r[8] = r[9] = r[10] = r[11] = 0;
  for (const auto& a : answers) {
    r += std::string("\xc0\x0c", 2);  // Name: pointer to the question.
    r += std::string(1, 0) + static_cast<char>(qtype);
    r += std::string("\x00\x01\x00\x00\x00\x3c", 6);  // IN, TTL 60.
    r += std::string(1, 0) + static_cast<char>(a.size());
    r += a;
  }
  return r;
}

std::string V4(const char* s) {
  in_addr a;
  inet_pton(AF_INET, s, &a);
  return std::string(reinterpret_cast<const char*>(&a), 4);
}
std::string V6(const char* s) {
  in6_addr a;
  inet_pton(AF_INET6, s, &a);
  return std::string(reinterpret_cast<const char*>(&a), 16);
}

}  // namespace shoal::dht
