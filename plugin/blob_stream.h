// Server-side streaming of a byte range of a committed blob, shared by the
// content service's Read and the peer service's FetchBlob: both reply with
// messages laid out as {int64 offset = 1; bytes data = 2;}. Each chunk is
// read from the file straight into a gRPC slice and sent without a
// serialization copy.
#ifndef SHOAL_PLUGIN_BLOB_STREAM_H_
#define SHOAL_PLUGIN_BLOB_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "plugin/store.h"

namespace shoal::plugin {

// Bytes per response message: 1 MiB, as containerd's own server sends, well
// under gRPC's 4 MiB default and containerd's 16 MiB limit; larger messages
// measured no faster.
inline constexpr size_t kReadChunkBytes = 1 << 20;

// Streams [offset, offset + length) of `reader`'s blob, then finishes OK.
// Deletes itself when gRPC is done with it, after running `on_done` (if set).
// `rpc` names the call in logs.
class BlobStreamReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  BlobStreamReactor(const char* rpc, std::unique_ptr<BlobReader> reader,
                    int64_t offset, int64_t length,
                    std::function<void()> on_done = nullptr);

  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  void SendNext();

  const char* const rpc_;
  std::unique_ptr<BlobReader> reader_;
  int64_t offset_;
  int64_t remaining_;
  std::function<void()> on_done_;
  grpc::ByteBuffer buffer_;
};

// A streaming reply that fails (or ends) before any data. Deletes itself.
class FinishedStreamReactor
    : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit FinishedStreamReactor(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// The bytes of a {int64 offset = 1; bytes data = 2;} message that precede
// `length` data bytes.
std::string EncodeChunkHeader(int64_t offset, size_t length);

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_BLOB_STREAM_H_
