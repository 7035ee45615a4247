#include "plugin/http_server.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::plugin {
namespace {

using ::testing::HasSubstr;

constexpr char kMetricsType[] = "text/plain; version=0.0.4; charset=utf-8";

struct Reply {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string content_type;
  curl_off_t content_length = -1;
  std::string headers;
  std::string body;
};

size_t AppendTo(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// One request with libcurl. `curl` may be a handle reused across calls (to
// keep the connection alive); null makes a fresh one. A non-empty `body` is
// sent with the request, whatever the method.
Reply Fetch(const std::string& url, const std::string& method = "GET",
            const std::string& body = "", CURL* curl = nullptr) {
  CURL* c = curl != nullptr ? curl : curl_easy_init();
  curl_easy_reset(c);
  Reply reply;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  // A bound so a broken server fails the test instead of hanging it.
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &AppendTo);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &AppendTo);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply.headers);
  if (!body.empty()) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  if (method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (method != "POST" || body.empty()) {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  }

  reply.code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  const char* type = nullptr;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type);
  if (type != nullptr) reply.content_type = type;
  curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
                    &reply.content_length);
  if (curl == nullptr) curl_easy_cleanup(c);
  return reply;
}

// A blocking TCP client on 127.0.0.1 for requests curl would not send.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    // A bound on reads so a broken server fails the test instead of hanging.
    timeval timeout = {30, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ =
        connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawClient() { close(fd_); }

  bool connected() const { return connected_; }
  bool Send(const std::string& data) {
    return send(fd_, data.data(), data.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(data.size());
  }
  // Reads until `needle` has arrived (empty: until the server closes the
  // connection) or the connection ends; returns everything read.
  std::string Read(const std::string& needle = "") {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((needle.empty() || out.find(needle) == std::string::npos) &&
           (n = recv(fd_, buf, sizeof(buf), 0)) > 0) {
      out.append(buf, n);
    }
    return out;
  }

 private:
  int fd_;
  bool connected_ = false;
};

class HttpServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { curl_global_init(CURL_GLOBAL_DEFAULT); }

  void SetUp() override {
    std::map<std::string, HttpServer::Handler> handlers;
    handlers["/metrics"] = [this](const std::string&,
                                  const std::map<std::string, std::string>&) {
      ++calls_;
      return HttpServer::Response{200, kMetricsType, "shoal_up 1\n"};
    };
    handlers["/echo path"] = [](const std::string& path,
                                const std::map<std::string, std::string>& q) {
      std::string body = absl::StrCat("path=", path, "\n");
      for (const auto& [k, v] : q) absl::StrAppend(&body, k, "=", v, "\n");
      HttpServer::Response response;
      response.body = body;
      return response;
    };
    handlers["/busy"] = [](const std::string&,
                           const std::map<std::string, std::string>&) {
      return HttpServer::Response{503, "application/json", "{\"busy\":true}"};
    };
    absl::StatusOr<std::unique_ptr<HttpServer>> server =
        HttpServer::Start("127.0.0.1:0", std::move(handlers));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
  }

  std::string Url(const std::string& path_and_query) const {
    return absl::StrCat("http://127.0.0.1:", server_->port(), path_and_query);
  }

  std::atomic<int> calls_{0};
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ServesRegisteredPathWithBodyAndContentType) {
  Reply reply = Fetch(Url("/metrics"));
  ASSERT_EQ(reply.code, CURLE_OK) << curl_easy_strerror(reply.code);
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.content_type, kMetricsType);
  EXPECT_EQ(reply.body, "shoal_up 1\n");
  EXPECT_EQ(calls_, 1);
}

TEST_F(HttpServerTest, HeadSendsTheSameHeadersWithoutBody) {
  Reply reply = Fetch(Url("/metrics"), "HEAD");
  ASSERT_EQ(reply.code, CURLE_OK) << curl_easy_strerror(reply.code);
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.content_type, kMetricsType);
  EXPECT_EQ(reply.content_length, 11);
  EXPECT_EQ(reply.body, "");
}

TEST_F(HttpServerTest, PassesHandlerStatusAndContentTypeThrough) {
  Reply reply = Fetch(Url("/busy"));
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(reply.content_type, "application/json");
  EXPECT_EQ(reply.body, "{\"busy\":true}");
}

TEST_F(HttpServerTest, UnknownPathIsNotFound) {
  EXPECT_EQ(Fetch(Url("/nope")).status, 404);
  EXPECT_EQ(Fetch(Url("/metrics/")).status, 404);
  EXPECT_EQ(Fetch(Url("/")).status, 404);
  EXPECT_EQ(calls_, 0);
}

TEST_F(HttpServerTest, OtherMethodsAreNotAllowedWithAllowHeader) {
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
    Reply reply = Fetch(Url("/metrics"), method);
    EXPECT_EQ(reply.status, 405) << method;
    EXPECT_THAT(reply.headers, HasSubstr("Allow: GET, HEAD\r\n")) << method;
  }
  EXPECT_EQ(Fetch(Url("/metrics"), "POST", "a=1").status, 405);
  EXPECT_EQ(calls_, 0);
}

TEST_F(HttpServerTest, RequestWithBodyIsRejected) {
  Reply reply = Fetch(Url("/metrics"), "GET", std::string(1000, 'x'));
  EXPECT_EQ(reply.status, 413);
  EXPECT_EQ(calls_, 0);
}

TEST_F(HttpServerTest, PassesDecodedPathAndQuery) {
  Reply reply = Fetch(Url("/echo%20path?b=hello%20world&a=1&flag&a=2&c=%26"));
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(reply.body,
            "path=/echo path\n"
            "a=1\n"
            "b=hello world\n"
            "c=&\n"
            "flag=\n");
}

TEST_F(HttpServerTest, ServesManyConcurrentClients) {
  constexpr int kClients = 16;
  constexpr int kRequests = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      CURL* curl = curl_easy_init();  // Reused: keep-alive connections.
      for (int r = 0; r < kRequests; ++r) {
        Reply reply = Fetch(Url("/metrics"), "GET", "", curl);
        if (reply.status == 200 && reply.body == "shoal_up 1\n") ++ok;
      }
      curl_easy_cleanup(curl);
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok, kClients * kRequests);
  EXPECT_EQ(calls_, kClients * kRequests);
}

TEST_F(HttpServerTest, StalledClientsDoNotBlockOthers) {
  // More stalled clients than server threads, each mid-request.
  std::vector<std::unique_ptr<RawClient>> stalled;
  for (int i = 0; i < 4; ++i) {
    stalled.push_back(std::make_unique<RawClient>(server_->port()));
    ASSERT_TRUE(stalled.back()->connected());
    ASSERT_TRUE(stalled.back()->Send("GET /metrics HTTP/1.1\r\nHost: x\r\n"));
  }

  for (int i = 0; i < 10; ++i) EXPECT_EQ(Fetch(Url("/metrics")).status, 200);

  // The stalled requests were open all along and still complete.
  for (auto& client : stalled) {
    ASSERT_TRUE(client->Send("Connection: close\r\n\r\n"));
    EXPECT_THAT(client->Read(), HasSubstr("HTTP/1.1 200"));
  }
}

TEST_F(HttpServerTest, StopClosesOpenConnectionsAndReleasesThePort) {
  const int port = server_->port();
  RawClient idle(port);
  ASSERT_TRUE(idle.connected());
  ASSERT_TRUE(idle.Send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_THAT(idle.Read("shoal_up 1\n"), HasSubstr("shoal_up 1\n"));

  // The connection is kept alive until the server stops; then it closes.
  server_.reset();
  EXPECT_EQ(idle.Read(), "");

  absl::StatusOr<std::unique_ptr<HttpServer>> again =
      HttpServer::Start(absl::StrCat("127.0.0.1:", port), {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->port(), port);
}

TEST_F(HttpServerTest, PortInUseIsUnavailable) {
  const std::string listen = absl::StrCat("127.0.0.1:", server_->port());
  absl::StatusOr<std::unique_ptr<HttpServer>> second =
      HttpServer::Start(listen, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(listen));
  EXPECT_THAT(second.status().message(), HasSubstr("Address already in use"));
}

TEST(HttpServer, AddressNotOnThisHostIsUnavailable) {
  // 192.0.2.0/24 is TEST-NET-1 (RFC 5737), assigned to no host.
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start("192.0.2.1:0", {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(server.status().message(), HasSubstr("192.0.2.1:0"));
}

TEST(HttpServer, RejectsMalformedListenAddresses) {
  for (const char* listen :
       {"", "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:http",
        "127.0.0.1:65536", "127.0.0.1:+80", "127.0.0.1:-1", "127.0.0.1:080000",
        "localhost:80", "1.2.3:80", "::1:80", "[::1]", "[::1:80",
        "[127.0.0.1]:80", "[fe80::1%lo]:80", "127.0.0.1 :80"}) {
    absl::StatusOr<std::unique_ptr<HttpServer>> server =
        HttpServer::Start(listen, {});
    ASSERT_FALSE(server.ok()) << listen;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument)
        << listen << ": " << server.status();
  }
}

TEST(HttpServer, ServesOnIpv6Loopback) {
  const int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 loopback = {};
  loopback.sin6_family = AF_INET6;
  loopback.sin6_addr = in6addr_loopback;
  const bool have_ipv6 =
      probe >= 0 && bind(probe, reinterpret_cast<sockaddr*>(&loopback),
                         sizeof(loopback)) == 0;
  if (probe >= 0) close(probe);
  if (!have_ipv6) GTEST_SKIP() << "no IPv6 loopback on this host";

  std::map<std::string, HttpServer::Handler> handlers;
  handlers["/ok"] = [](const std::string&,
                       const std::map<std::string, std::string>&) {
    HttpServer::Response response;
    response.body = "ok";
    return response;
  };
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start("[::1]:0", std::move(handlers));
  ASSERT_TRUE(server.ok()) << server.status();
  Reply reply = Fetch(absl::StrCat("http://[::1]:", (*server)->port(), "/ok"));
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "ok");
}

}  // namespace
}  // namespace shoal::plugin
