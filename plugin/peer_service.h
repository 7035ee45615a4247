// The peer side of Shoal's blob transfer: serves committed blobs from the
// store to other nodes (shoal.peer.v1.Peer), with a cap on concurrent
// streams per client address. Thread-safe; the store must outlive it.
#ifndef SHOAL_PLUGIN_PEER_SERVICE_H_
#define SHOAL_PLUGIN_PEER_SERVICE_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "plugin/store.h"
#include "shoal/peer/v1/peer.grpc.pb.h"

namespace shoal::plugin {

// Initial metadata key carrying the blob's size in decimal.
inline constexpr char kBlobSizeMetadata[] = "shoal-blob-size";

// TODO: no upload bandwidth cap yet; a node serving many peers can fill its
// uplink and slow its own pods' traffic.
struct PeerServiceOptions {
  // Streams one client address may have open at once. Four keeps a node
  // pulling several layers busy while leaving room for other nodes; more
  // only splits the same uplink finer.
  int max_streams_per_peer = 4;
};

class PeerService final
    : public ::shoal::peer::v1::Peer::WithRawCallbackMethod_FetchBlob<
          ::shoal::peer::v1::Peer::Service> {
 public:
  PeerService(BlobStore* store, PeerServiceOptions options)
      : store_(*store), options_(options) {}

  // shoal.peer.v1.Peer
  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchBlob(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req) override;

  // Streams open now for client `host` (for tests and metrics).
  int ActiveStreams(const std::string& host);

 private:
  // Takes a stream slot for `host`; false when it has none left.
  bool Acquire(const std::string& host);
  void Release(const std::string& host);

  BlobStore& store_;
  const PeerServiceOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> active_ ABSL_GUARDED_BY(mu_);
};

// The host part of a gRPC peer string ("ipv4:10.0.0.7:4242" -> "10.0.0.7",
// "ipv6:[::1]:4242" -> "[::1]").
std::string PeerHost(const std::string& grpc_peer);

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_PEER_SERVICE_H_
