#include "plugin/peer_service.h"

#include <glog/logging.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "plugin/blob_stream.h"

namespace shoal::plugin {
namespace {

namespace pv1 = ::shoal::peer::v1;

grpc::ServerWriteReactor<grpc::ByteBuffer>* Fail(grpc::StatusCode code,
                                                 std::string message) {
  VLOG(1) << "peer: rejected fetch code=" << code << " error=" << message;
  return new FinishedStreamReactor(grpc::Status(code, std::move(message)));
}

// Burst of the upload cap: two chunks, so one stream keeps a chunk in
// flight while the next is read, and the cap holds over any 100 ms window
// at rates above 20 MiB/s.
constexpr int64_t kUploadBurstBytes = 2 * kReadChunkBytes;

}  // namespace

PeerService::PeerService(BlobStore* store, PeerServiceOptions options,
                         NodeMetrics* metrics)
    : store_(*store), options_(options), metrics_(metrics) {
  if (metrics_ == nullptr) {
    own_metrics_ = std::make_unique<NodeMetrics>();
    metrics_ = own_metrics_.get();
  }
  if (options_.upload_bytes_per_second > 0) {
    limiter_ = std::make_unique<UploadLimiter>(options_.upload_bytes_per_second,
                                               kUploadBurstBytes);
  }
  if (options_.corrupt_uploads) {
    LOG(WARNING) << "peer: fault injection on: every blob served to peers is "
                    "corrupted (--fault_corrupt_uploads; testing only)";
  }
}

PeerService::~PeerService() = default;

void PeerService::PrepareShutdown() {
  if (limiter_ != nullptr) limiter_->Stop();
}

void PeerService::OnChunk(char* data, size_t n) {
  metrics_->peer_served_bytes().Add(static_cast<double>(n));
  if (options_.corrupt_uploads && n > 0) {
    data[0] = static_cast<char>(~data[0]);
    metrics_->served_corrupted().Add();
  }
}

void PeerService::Pace(size_t n, std::function<void()> send) {
  if (limiter_ == nullptr) {
    send();
  } else {
    limiter_->Pace(n, std::move(send));
  }
}

std::string PeerHost(const std::string& grpc_peer) {
  absl::string_view s = grpc_peer;
  for (absl::string_view scheme : {"ipv4:", "ipv6:", "unix:"}) {
    if (absl::StartsWith(s, scheme)) s.remove_prefix(scheme.size());
  }
  if (!s.empty() && s[0] == '[') {  // [v6 address]:port
    size_t close = s.find(']');
    return std::string(
        s.substr(0, close == absl::string_view::npos ? s.size() : close + 1));
  }
  size_t colon = s.rfind(':');
  if (colon != absl::string_view::npos) s = s.substr(0, colon);
  return std::string(s);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* PeerService::FetchBlob(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
  pv1::FetchBlobRequest req;
  grpc::ByteBuffer copy(*raw);
  if (!grpc::GenericDeserialize<grpc::ProtoBufferReader, pv1::FetchBlobRequest>(
           &copy, &req)
           .ok()) {
    return Fail(grpc::StatusCode::INVALID_ARGUMENT,
                "malformed FetchBlobRequest");
  }
  if (req.offset() < 0) {
    return Fail(grpc::StatusCode::INVALID_ARGUMENT,
                absl::StrCat("negative offset ", req.offset()));
  }
  absl::StatusOr<std::unique_ptr<BlobReader>> reader =
      store_.OpenBlob(req.digest());
  if (!reader.ok()) {
    return Fail(static_cast<grpc::StatusCode>(reader.status().code()),
                std::string(reader.status().message()));
  }
  int64_t size = (*reader)->size();
  if (req.offset() > size) {
    return Fail(grpc::StatusCode::OUT_OF_RANGE,
                absl::StrCat("offset ", req.offset(), " is past the end of ",
                             req.digest(), " (", size, " bytes)"));
  }
  std::string host = PeerHost(ctx->peer());
  if (!Acquire(host)) {
    LOG_EVERY_T(WARNING, 10)
        << "peer: too many streams peer=" << host
        << " max=" << options_.max_streams_per_peer << " (rate limited)";
    return Fail(grpc::StatusCode::RESOURCE_EXHAUSTED,
                absl::StrCat("at most ", options_.max_streams_per_peer,
                             " concurrent fetches per peer"));
  }
  VLOG(1) << "peer: serving digest=" << req.digest() << " peer=" << host
          << " offset=" << req.offset();
  ctx->AddInitialMetadata(kBlobSizeMetadata, absl::StrCat(size));
  return new BlobStreamReactor(
      "FetchBlob", *std::move(reader), req.offset(), size - req.offset(),
      [this, host] { Release(host); }, this);
}

int PeerService::ActiveStreams(const std::string& host) {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(host);
  return it == active_.end() ? 0 : it->second;
}

bool PeerService::Acquire(const std::string& host) {
  absl::MutexLock lock(&mu_);
  int& n = active_[host];
  if (n >= options_.max_streams_per_peer) {
    if (n == 0) active_.erase(host);
    return false;
  }
  ++n;
  return true;
}

void PeerService::Release(const std::string& host) {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(host);
  if (it != active_.end() && --it->second <= 0) active_.erase(it);
}

}  // namespace shoal::plugin
