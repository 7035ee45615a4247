// Runs the content service and the grpc.health.v1 service on one unix
// socket, over shoald's own HTTP/2 transport (h2_server.h) or gRPC C++'s
// server. Used by shoald and by tests that need a real server.
#ifndef SHOAL_PLUGIN_SERVER_H_
#define SHOAL_PLUGIN_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plugin/blob_events.h"
#include "plugin/content_service.h"
#include "plugin/h2_server.h"
#include "plugin/store.h"

namespace shoal::plugin {

// What serves the socket. Both speak the same gRPC; kHttp2 costs a fraction
// of the CPU per call (h2_server.h), kGrpc is gRPC C++'s own server.
enum class ContentTransport { kHttp2, kGrpc };

class ContentServer {
 public:
  // Opens the store at `root` and listens on the unix socket `socket_path`
  // (an absolute path; a stale socket file there is replaced, any other file
  // is an error). The socket is made accessible to its owner only.
  // `events`, when not null, is passed to the ContentService (commits and
  // deletes) and must outlive the server.
  static absl::StatusOr<std::unique_ptr<ContentServer>> Start(
      const std::string& socket_path, const std::string& root,
      BlobEvents* events = nullptr,
      ContentTransport transport = ContentTransport::kHttp2);

  // Serves `store`, which the caller opened and which must outlive the
  // server, with the ContentService's optional collaborators (all may be
  // null; those given must outlive the server).
  static absl::StatusOr<std::unique_ptr<ContentServer>> Start(
      const std::string& socket_path, BlobStore* store, BlobEvents* events,
      Fetcher* fetcher, NodeMetrics* metrics,
      ContentTransport transport = ContentTransport::kHttp2);

  ~ContentServer();

  // Stops accepting calls and cancels those still running after `grace`.
  // Open ingests keep their data and stay resumable. Idempotent.
  void Shutdown(absl::Duration grace);

  BlobStore& store() { return *store_; }
  const std::string& socket_path() const { return socket_path_; }

 private:
  ContentServer() = default;

  std::string socket_path_;
  std::unique_ptr<BlobStore> owned_store_;  // Set by the first Start().
  BlobStore* store_ = nullptr;
  std::unique_ptr<ContentService> service_;
  std::unique_ptr<H2Server> h2_;          // With kHttp2.
  std::unique_ptr<grpc::Server> server_;  // With kGrpc.
  bool shut_down_ = false;
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_SERVER_H_
