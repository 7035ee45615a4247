// containerd.services.content.v1.Content over a BlobStore: the service
// containerd 1.6 calls as its proxy content plugin. Semantics follow
// containerd's own contentserver (services/content/contentserver), with the
// differences the proxy path needs (see ../shared/docs and plugin/README.md):
// a COMMIT without data never truncates, the first STAT never answers
// ALREADY_EXISTS, Delete and Abort are OK for unknown keys.
//
// Thread-safe: gRPC calls each RPC on its own thread; the store does the
// locking. The store, and the optional BlobEvents observer, must outlive the
// service.
#ifndef SHOAL_PLUGIN_CONTENT_SERVICE_H_
#define SHOAL_PLUGIN_CONTENT_SERVICE_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "containerd/services/content/v1/content.grpc.pb.h"
#include "plugin/blob_events.h"
#include "plugin/blob_stream.h"
#include "plugin/fetcher.h"
#include "plugin/metrics.h"
#include "plugin/node_metrics.h"
#include "plugin/store.h"

namespace shoal::plugin {

// Largest message containerd's proxy client sends or accepts (16 MiB,
// containerd defaults/defaults.go); a whole small blob may come in one WRITE.
inline constexpr int kMaxMessageBytes = 16 << 20;

// Maps an absl::Status to the grpc::Status with the same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Blobs filled from peers whose write stream has not ended yet: committed
// in the store, but not yet in containerd's metadata, so a GC pass running
// in between would delete them. Delete leaves pinned blobs alone (and still
// answers OK, as GC requires). Thread-safe.
class BlobPins {
 public:
  void Pin(const std::string& digest);
  void Unpin(const std::string& digest);
  bool IsPinned(const std::string& digest);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> count_ ABSL_GUARDED_BY(mu_);
};

// The streams that the streaming RPCs' bodies run over, so that gRPC's
// server and shoald's own HTTP/2 transport (h2_server.h) share them.
// Write returns false once the client is gone; Read returns false at the end
// of the client's messages (or when it is gone).
template <typename Reply>
class ReplyStream {
 public:
  virtual ~ReplyStream() = default;
  virtual bool Write(const Reply& reply) = 0;
};
template <typename Request, typename Reply>
class DuplexStream : public ReplyStream<Reply> {
 public:
  virtual bool Read(Request* request) = 0;
};

// The blobs Read opened last, so the 32 KiB Read streams of an unpack cost
// no open(2), fstat(2) and close(2) each. An entry is used for at most
// kMaxAge after its open and dropped by Forget (the content service's
// Delete), so a blob deleted behind shoald's back (outside the content API)
// stays readable for at most that long. Thread-safe.
class BlobReaderCache {
 public:
  static constexpr absl::Duration kMaxAge = absl::Seconds(1);
  // Enough for the layers containerd unpacks at once.
  static constexpr size_t kEntries = 8;

  explicit BlobReaderCache(BlobStore& store) : store_(store) {}

  // The open blob, from the cache or the store.
  absl::StatusOr<std::shared_ptr<const BlobReader>> Open(
      const std::string& digest);
  void Forget(const std::string& digest);

 private:
  struct Entry {
    std::string digest;
    std::shared_ptr<const BlobReader> reader;
    absl::Time opened;
  };

  // Drops `digest`'s entry, if any.
  void EraseLocked(const std::string& digest)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  BlobStore& store_;
  absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);  // Oldest first.
};

// A validated Read: the open blob and the byte range to send.
struct ReadRange {
  std::shared_ptr<const BlobReader> reader;
  int64_t offset = 0;
  int64_t length = 0;
};

// Read is served with gRPC's callback API on raw byte buffers: containerd
// opens one Read stream per 32 KiB while unpacking, and the callback path
// avoids the sync server's thread hand-offs per call, while raw buffers let
// file bytes go into the response without a serialization copy. The other
// RPCs use the sync API.
class ContentService final
    : public ::containerd::services::content::v1::Content::
          WithRawCallbackMethod_Read<
              ::containerd::services::content::v1::Content::Service> {
 public:
  // `events`, when not null, hears of every successful COMMIT (including one
  // that found the blob already stored) and every Delete; Info and Read
  // never call it.
  // `fetcher`, when not null, fills ingests from peers (fetcher.h).
  // `metrics`, when null, are kept privately (tests).
  explicit ContentService(BlobStore* store, BlobEvents* events = nullptr,
                          Fetcher* fetcher = nullptr,
                          NodeMetrics* metrics = nullptr);

  // containerd.services.content.v1.Content
  grpc::Status Info(
      grpc::ServerContext* ctx,
      const ::containerd::services::content::v1::InfoRequest* req,
      ::containerd::services::content::v1::InfoResponse* resp) override;
  grpc::Status Update(
      grpc::ServerContext* ctx,
      const ::containerd::services::content::v1::UpdateRequest* req,
      ::containerd::services::content::v1::UpdateResponse* resp) override;
  grpc::Status List(
      grpc::ServerContext* ctx,
      const ::containerd::services::content::v1::ListContentRequest* req,
      grpc::ServerWriter<
          ::containerd::services::content::v1::ListContentResponse>* writer)
      override;
  grpc::Status Delete(
      grpc::ServerContext* ctx,
      const ::containerd::services::content::v1::DeleteContentRequest* req,
      ::google::protobuf::Empty* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Read(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req) override;
  grpc::Status Status(
      grpc::ServerContext* ctx,
      const ::containerd::services::content::v1::StatusRequest* req,
      ::containerd::services::content::v1::StatusResponse* resp) override;
  grpc::Status ListStatuses(
      grpc::ServerContext* ctx,
      const ::containerd::services::content::v1::ListStatusesRequest* req,
      ::containerd::services::content::v1::ListStatusesResponse* resp) override;
  grpc::Status Write(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<
          ::containerd::services::content::v1::WriteContentResponse,
          ::containerd::services::content::v1::WriteContentRequest>* stream)
      override;
  grpc::Status Abort(
      grpc::ServerContext* ctx,
      const ::containerd::services::content::v1::AbortRequest* req,
      ::google::protobuf::Empty* resp) override;

  // The bodies of List, Read and Write, whatever transport carries them.
  // The unary RPCs above ignore their context, so a transport may pass null.
  grpc::Status ListTo(
      const ::containerd::services::content::v1::ListContentRequest& req,
      ReplyStream<::containerd::services::content::v1::ListContentResponse>&
          out);
  // Checks the request and opens the blob; the caller streams `out`'s range
  // in messages laid out as blob_stream.h says.
  grpc::Status OpenRead(
      const ::containerd::services::content::v1::ReadContentRequest& req,
      ReadRange* out);
  grpc::Status WriteOver(
      DuplexStream<::containerd::services::content::v1::WriteContentRequest,
                   ::containerd::services::content::v1::WriteContentResponse>&
          stream);

 private:
  using Labels = std::map<std::string, std::string>;

  void FillInfo(const BlobInfo& blob,
                ::containerd::services::content::v1::Info* out);

  BlobStore& store_;
  BlobEvents* const events_;  // Not owned; may be null.
  Fetcher* const fetcher_;    // Not owned; may be null.
  // Set when the caller passed none.
  std::unique_ptr<NodeMetrics> own_metrics_;
  NodeMetrics* metrics_;  // Never null.

  BlobPins pins_;
  BlobReaderCache readers_;
  absl::Mutex labels_mu_;
  // Labels set through Update, by digest. containerd keeps its own labels in
  // its metadata database and never sends them here; this serves clients that
  // talk to shoald directly.
  // TODO: labels are kept in memory only and are lost when shoald restarts;
  // containerd is unaffected (it stores labels in bolt), direct clients lose
  // them.
  absl::flat_hash_map<std::string, Labels> labels_ ABSL_GUARDED_BY(labels_mu_);
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_CONTENT_SERVICE_H_
