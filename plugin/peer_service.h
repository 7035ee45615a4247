// The peer side of Shoal's blob transfer: serves committed blobs from the
// store to other nodes (shoal.peer.v1.Peer), with a cap on concurrent
// streams per client address. Thread-safe; the store must outlive it.
#ifndef SHOAL_PLUGIN_PEER_SERVICE_H_
#define SHOAL_PLUGIN_PEER_SERVICE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "plugin/blob_stream.h"
#include "plugin/metrics.h"
#include "plugin/node_metrics.h"
#include "plugin/store.h"
#include "plugin/upload_limiter.h"
#include "shoal/peer/v1/peer.grpc.pb.h"

namespace shoal::plugin {

// Initial metadata key carrying the blob's size in decimal.
inline constexpr char kBlobSizeMetadata[] = "shoal-blob-size";

struct PeerServiceOptions {
  // Streams one client address may have open at once. Four keeps a node
  // pulling several layers busy while leaving room for other nodes; more
  // only splits the same uplink finer.
  int max_streams_per_peer = 4;
  // Cap on the bytes per second of all streams together; 0: none.
  int64_t upload_bytes_per_second = 0;
  // Testing only: flip the bits of the first byte of every chunk served, so
  // fetchers see data that fails verification.
  bool corrupt_uploads = false;
};

class PeerService final
    : public ::shoal::peer::v1::Peer::WithRawCallbackMethod_FetchBlob<
          ::shoal::peer::v1::Peer::Service>,
      private StreamShaper {
 public:
  // `metrics`, when null, are kept privately (tests).
  PeerService(BlobStore* store, PeerServiceOptions options,
              NodeMetrics* metrics = nullptr);
  ~PeerService() override;

  // shoal.peer.v1.Peer
  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchBlob(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req) override;

  // Lifts the upload cap so that paced streams finish (or fail) at once;
  // call before shutting the gRPC server down.
  void PrepareShutdown();

  // Streams open now for client `host` (for tests and metrics).
  int ActiveStreams(const std::string& host);

 private:
  // Takes a stream slot for `host`; false when it has none left.
  bool Acquire(const std::string& host);
  void Release(const std::string& host);

  // StreamShaper
  void OnChunk(char* data, size_t n) override;
  void Pace(size_t n, std::function<void()> send) override;

  BlobStore& store_;
  const PeerServiceOptions options_;
  std::unique_ptr<NodeMetrics> own_metrics_;
  NodeMetrics* metrics_;                    // Never null.
  std::unique_ptr<UploadLimiter> limiter_;  // Null without a cap.
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> active_ ABSL_GUARDED_BY(mu_);
};

// The host part of a gRPC peer string ("ipv4:10.0.0.7:4242" -> "10.0.0.7",
// "ipv6:[::1]:4242" -> "[::1]").
std::string PeerHost(const std::string& grpc_peer);

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_PEER_SERVICE_H_
