// A small read-only HTTP server for /metrics and debug pages, on GNU
// libmicrohttpd (Debian libmicrohttpd-dev 0.9.75), which does all HTTP
// parsing. Serves GET and HEAD on exact paths. Handlers run on
// libmicrohttpd's internal threads (a pool of two), possibly concurrently,
// so they must be thread-safe; they should be quick, because a slow handler
// holds up the other connections of its thread.
#ifndef SHOAL_PLUGIN_HTTP_SERVER_H_
#define SHOAL_PLUGIN_HTTP_SERVER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct MHD_Daemon;

namespace shoal::plugin {

class HttpServer {
 public:
  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };
  // `path` is the request path without the query string, percent-decoded;
  // `query` its arguments, percent-decoded ("?a" gives a -> ""; for a
  // repeated name the first value wins).
  using Handler =
      std::function<Response(const std::string& path,
                             const std::map<std::string, std::string>& query)>;

  // Binds `listen` ("IP:port" or "[IPv6]:port", literal addresses only; port
  // 0 picks a free one) and serves `handlers`, keyed by exact path
  // ("/metrics"). GET and HEAD (HEAD: the same status and headers, no body)
  // reach the handler; an unknown path gets 404, another method 405 with an
  // Allow header, a request with a body 413. INVALID_ARGUMENT for a malformed
  // `listen`; UNAVAILABLE when the socket cannot be bound or the server not
  // started, with the address and the system's reason in the message.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& listen, std::map<std::string, Handler> handlers);

  // Stops the server: closes the listening socket and every connection, and
  // waits for handlers that are running to return.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port, also when `listen` asked for port 0.
  int port() const { return port_; }

 private:
  // libmicrohttpd's C callbacks, defined in http_server.cc.
  struct Callbacks;

  HttpServer(std::string listen, std::map<std::string, Handler> handlers,
             int port);

  // Set at construction.
  const std::string listen_;
  const std::map<std::string, Handler> handlers_;
  const int port_;
  // Owned; set once by Start(), stopped by the destructor.
  MHD_Daemon* daemon_ = nullptr;
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_HTTP_SERVER_H_
