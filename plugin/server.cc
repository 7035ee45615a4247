#include "plugin/server.h"

#include <errno.h>
#include <glog/logging.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "plugin/file_util.h"
#include "plugin/status_macros.h"

namespace shoal::plugin {
namespace {

absl::Status PrepareSocketPath(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path must be absolute, got \"", path, "\""));
  }
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path is ", path.size(),
                     " bytes; unix sockets "
                     "allow at most ",
                     sizeof(sockaddr_un::sun_path) - 1));
  }
  SHOAL_RETURN_IF_ERROR(MakeDirs(path.substr(0, path.rfind('/'))));
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to replace ", path, ": it exists and is not a socket"));
    }
    if (unlink(path.c_str()) != 0) return ErrnoToStatus(errno, "unlink", path);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ContentServer>> ContentServer::Start(
    const std::string& socket_path, const std::string& root, BlobEvents* events,
    ContentTransport transport) {
  SHOAL_ASSIGN_OR_RETURN(std::unique_ptr<BlobStore> store,
                         BlobStore::Open(root));
  SHOAL_ASSIGN_OR_RETURN(
      std::unique_ptr<ContentServer> s,
      Start(socket_path, store.get(), events, nullptr, nullptr, transport));
  s->owned_store_ = std::move(store);
  return s;
}

absl::StatusOr<std::unique_ptr<ContentServer>> ContentServer::Start(
    const std::string& socket_path, BlobStore* store, BlobEvents* events,
    Fetcher* fetcher, NodeMetrics* metrics, ContentTransport transport) {
  SHOAL_RETURN_IF_ERROR(PrepareSocketPath(socket_path));
  std::unique_ptr<ContentServer> s(new ContentServer());
  s->socket_path_ = socket_path;
  s->store_ = store;
  s->service_ =
      std::make_unique<ContentService>(store, events, fetcher, metrics);
  if (transport == ContentTransport::kHttp2) {
    SHOAL_ASSIGN_OR_RETURN(s->h2_,
                           H2Server::Start(socket_path, s->service_.get()));
    if (chmod(socket_path.c_str(), 0600) != 0) {
      return ErrnoToStatus(errno, "chmod", socket_path);
    }
    return s;
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", socket_path),
                           grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on unix socket ", socket_path));
  }
  if (chmod(socket_path.c_str(), 0600) != 0) {
    return ErrnoToStatus(errno, "chmod", socket_path);
  }
  s->server_->GetHealthCheckService()->SetServingStatus(true);
  return s;
}

ContentServer::~ContentServer() { Shutdown(absl::ZeroDuration()); }

void ContentServer::Shutdown(absl::Duration grace) {
  if (shut_down_ || (server_ == nullptr && h2_ == nullptr)) return;
  shut_down_ = true;
  if (h2_ != nullptr) {
    h2_->Shutdown(grace);
    unlink(socket_path_.c_str());
    return;
  }
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  unlink(socket_path_.c_str());
}

}  // namespace shoal::plugin
