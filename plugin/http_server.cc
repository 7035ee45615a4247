#include "plugin/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "glog/logging.h"

namespace shoal::plugin {
namespace {

// Two threads: a scrape and a debug page can be served at once, and each
// thread multiplexes its connections, so a slow client does not pin one.
constexpr unsigned int kThreads = 2;
// Open connections across both threads; beyond this libmicrohttpd closes new
// ones at once. Scrapers and operators need a handful, so 64 is generous
// while bounding the file descriptors a flood can take.
constexpr unsigned int kMaxConnections = 64;
// Seconds a connection may stay idle (also mid-request) before it is
// closed, so a client that stops sending cannot hold a slot for long.
constexpr unsigned int kIdleTimeoutSeconds = 10;
// Pending connections the kernel queues before accept.
constexpr int kListenBacklog = 64;
// Seconds between repeated warnings about the same kind of failure.
constexpr int kWarnEverySeconds = 10;

constexpr char kAllowedMethods[] = "GET, HEAD";

struct ListenAddress {
  sockaddr_storage addr = {};
  socklen_t len = 0;
};

// Parses "IP:port" or "[IPv6]:port" (literals only: this binds, it does not
// resolve names). The port is 0-65535, digits only.
absl::StatusOr<ListenAddress> ParseListen(const std::string& listen) {
  auto invalid = [&listen](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("http: bad listen address \"", listen, "\": ", why));
  };

  absl::string_view text = listen;
  const size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) return invalid("no port");
  absl::string_view host = text.substr(0, colon);
  const absl::string_view port_text = text.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5) return invalid("bad port");
  int port = 0;
  for (char c : port_text) {
    if (!absl::ascii_isdigit(c)) return invalid("bad port");
    port = port * 10 + (c - '0');
  }
  if (port > 65535) return invalid("port out of range");

  ListenAddress out;
  const bool bracketed =
      host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (bracketed) {
    const std::string ip(host.substr(1, host.size() - 2));
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out.addr);
    if (inet_pton(AF_INET6, ip.c_str(), &sin6->sin6_addr) != 1) {
      return invalid("not an IPv6 address");
    }
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    out.len = sizeof(sockaddr_in6);
    return out;
  }
  const std::string ip(host);
  auto* sin = reinterpret_cast<sockaddr_in*>(&out.addr);
  if (inet_pton(AF_INET, ip.c_str(), &sin->sin_addr) != 1) {
    return invalid("not an IPv4 address (IPv6 goes in brackets)");
  }
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  out.len = sizeof(sockaddr_in);
  return out;
}

absl::Status SocketError(absl::string_view op, const std::string& listen,
                         int err) {
  return absl::UnavailableError(
      absl::StrCat("http: cannot ", op, " ", listen, ": ", strerror(err)));
}

// Binds and listens ourselves rather than letting libmicrohttpd do it: its
// start failure says only "NULL", while here the errno names the cause.
// Returns the socket and stores the bound port in `*port`.
absl::StatusOr<int> BindListenSocket(const ListenAddress& address,
                                     const std::string& listen, int* port) {
  const int fd = socket(address.addr.ss_family,
                        SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return SocketError("create socket for", listen, errno);

  // A restarted shoald must rebind while the old connections sit in
  // TIME_WAIT.
  const int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      bind(fd, reinterpret_cast<const sockaddr*>(&address.addr), address.len) !=
          0 ||
      ::listen(fd, kListenBacklog) != 0) {
    const int err = errno;
    close(fd);
    return SocketError("bind", listen, err);
  }

  sockaddr_storage bound = {};
  socklen_t len = sizeof(bound);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    const int err = errno;
    close(fd);
    return SocketError("read the port of", listen, err);
  }
  *port = ntohs(bound.ss_family == AF_INET6
                    ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                    : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  return fd;
}

MHD_Result AddQueryArgument(void* cls, MHD_ValueKind /*kind*/, const char* key,
                            const char* value) {
  auto* query = static_cast<std::map<std::string, std::string>*>(cls);
  // emplace keeps the first value of a repeated name.
  query->emplace(key, value == nullptr ? "" : value);
  return MHD_YES;
}

// Declares a body through Content-Length or chunked Transfer-Encoding.
bool HasBody(MHD_Connection* connection) {
  const char* length = MHD_lookup_connection_value(
      connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  const char* encoding = MHD_lookup_connection_value(
      connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
  return (length != nullptr && std::strcmp(length, "0") != 0) ||
         encoding != nullptr;
}

HttpServer::Response PlainResponse(int status, absl::string_view body) {
  HttpServer::Response response;
  response.status = status;
  response.body = absl::StrCat(body, "\n");
  return response;
}

// Queues `response`; libmicrohttpd copies the body and, for HEAD, sends the
// headers (Content-Length included) without it.
MHD_Result Send(MHD_Connection* connection,
                const HttpServer::Response& response, bool allow_header) {
  MHD_Response* reply = MHD_create_response_from_buffer(
      response.body.size(), const_cast<char*>(response.body.data()),
      MHD_RESPMEM_MUST_COPY);
  if (reply == nullptr) return MHD_NO;
  MHD_add_response_header(reply, MHD_HTTP_HEADER_CONTENT_TYPE,
                          response.content_type.c_str());
  if (allow_header) {
    MHD_add_response_header(reply, MHD_HTTP_HEADER_ALLOW, kAllowedMethods);
  }
  const MHD_Result queued =
      MHD_queue_response(connection, response.status, reply);
  MHD_destroy_response(reply);
  return queued;
}

}  // namespace

struct HttpServer::Callbacks {
  // MHD_AccessHandlerCallback. Called once a request's headers are in; it
  // answers at once, so libmicrohttpd never reads a body and calls no more.
  static MHD_Result OnRequest(void* cls, MHD_Connection* connection,
                              const char* url, const char* method,
                              const char* /*version*/,
                              const char* /*upload_data*/,
                              size_t* /*upload_data_size*/,
                              void** /*con_cls*/) {
    const auto* server = static_cast<const HttpServer*>(cls);
    const std::string path = url;
    const bool get_or_head = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                             std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    Response response;
    if (!get_or_head) {
      response =
          PlainResponse(MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
    } else if (HasBody(connection)) {
      response = PlainResponse(MHD_HTTP_CONTENT_TOO_LARGE,
                               "request body not accepted");
    } else if (auto it = server->handlers_.find(path);
               it == server->handlers_.end()) {
      response = PlainResponse(MHD_HTTP_NOT_FOUND, "not found");
    } else {
      std::map<std::string, std::string> query;
      MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND,
                                &AddQueryArgument, &query);
      response = it->second(path, query);
    }
    if (response.status < 100 || response.status > 599) {
      LOG_EVERY_T(WARNING, kWarnEverySeconds)
          << "http: handler returned a bad status path="
          << absl::CHexEscape(path) << " status=" << response.status;
      response = PlainResponse(MHD_HTTP_INTERNAL_SERVER_ERROR, "bad status");
    }

    VLOG(1) << "http: request method=" << absl::CHexEscape(method)
            << " path=" << absl::CHexEscape(path)
            << " status=" << response.status
            << " bytes=" << response.body.size();
    const MHD_Result queued = Send(
        connection, response, response.status == MHD_HTTP_METHOD_NOT_ALLOWED);
    if (queued != MHD_YES) {
      LOG_EVERY_T(WARNING, kWarnEverySeconds)
          << "http: cannot queue response listen=" << server->listen_
          << " path=" << absl::CHexEscape(path);
    }
    return queued;
  }

  // MHD_LogCallback: libmicrohttpd's own errors (connection limit reached,
  // send failures), which clients can trigger, hence rate-limited.
  static void OnLog(void* cls, const char* format, va_list args) {
    const auto* server = static_cast<const HttpServer*>(cls);
    char message[512];
    std::vsnprintf(message, sizeof(message), format, args);
    absl::string_view text = absl::StripTrailingAsciiWhitespace(message);
    LOG_EVERY_T(WARNING, kWarnEverySeconds)
        << "http: libmicrohttpd error listen=" << server->listen_ << " msg=\""
        << text << "\"";
  }
};

HttpServer::HttpServer(std::string listen,
                       std::map<std::string, Handler> handlers, int port)
    : listen_(std::move(listen)), handlers_(std::move(handlers)), port_(port) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& listen, std::map<std::string, Handler> handlers) {
  absl::StatusOr<ListenAddress> address = ParseListen(listen);
  if (!address.ok()) return address.status();
  int port = 0;
  absl::StatusOr<int> fd = BindListenSocket(*address, listen, &port);
  if (!fd.ok()) return fd.status();

  std::unique_ptr<HttpServer> server(
      new HttpServer(listen, std::move(handlers), port));
  // epoll scales and is what Linux offers; MHD_USE_AUTO lets libmicrohttpd
  // pick poll() or select() on a build without it.
  const unsigned int polling =
      MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL
                                                             : MHD_USE_AUTO;
  // The logger goes first so start-up errors reach it too.
  server->daemon_ = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | polling,
      /*port=*/0, /*apc=*/nullptr, /*apc_cls=*/nullptr, &Callbacks::OnRequest,
      server.get(), MHD_OPTION_EXTERNAL_LOGGER, &Callbacks::OnLog, server.get(),
      MHD_OPTION_LISTEN_SOCKET, static_cast<MHD_socket>(*fd),
      MHD_OPTION_THREAD_POOL_SIZE, kThreads, MHD_OPTION_CONNECTION_LIMIT,
      kMaxConnections, MHD_OPTION_CONNECTION_TIMEOUT, kIdleTimeoutSeconds,
      MHD_OPTION_END);
  if (server->daemon_ == nullptr) {
    // The socket is not closed here: once libmicrohttpd has adopted it, its
    // failure paths close it themselves.
    return absl::UnavailableError(absl::StrCat(
        "http: cannot start libmicrohttpd on ", listen, " (see its log)"));
  }

  LOG(INFO) << "http: serving listen=" << listen << " port=" << port
            << " paths=" << server->handlers_.size();
  return server;
}

HttpServer::~HttpServer() {
  if (daemon_ == nullptr) return;  // Start() failed.
  // Joins the internal threads (running handlers finish first) and closes
  // the listening socket and every connection.
  MHD_stop_daemon(daemon_);
  LOG(INFO) << "http: stopped listen=" << listen_ << " port=" << port_;
}

}  // namespace shoal::plugin
