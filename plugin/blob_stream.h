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

// What the peer service adds to a plain stream: accounting, an upload cap
// and fault injection. The content service's Read uses none of it.
// Implementations are shared by all streams and must be thread-safe.
class StreamShaper {
 public:
  virtual ~StreamShaper() = default;
  // Sees each chunk (`n` bytes at `data`) before it is sent; may alter it.
  virtual void OnChunk(char* data, size_t n) = 0;
  // Runs `send` once `n` more bytes may go out: at once on the calling
  // thread, or later on another thread.
  virtual void Pace(size_t n, std::function<void()> send) = 0;
};

// Streams [offset, offset + length) of `reader`'s blob, then finishes OK.
// Deletes itself when gRPC is done with it, after running `on_done` (if set).
// `rpc` names the call in logs. `shaper`, when set, must outlive the stream.
class BlobStreamReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  BlobStreamReactor(const char* rpc, std::shared_ptr<const BlobReader> reader,
                    int64_t offset, int64_t length,
                    std::function<void()> on_done = nullptr,
                    StreamShaper* shaper = nullptr);

  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  void SendNext();
  // Starts the write of buffer_, the last one when nothing remains.
  void StartSend();

  const char* const rpc_;
  std::shared_ptr<const BlobReader> reader_;
  int64_t offset_;
  int64_t remaining_;
  std::function<void()> on_done_;
  StreamShaper* const shaper_;  // May be null.
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
