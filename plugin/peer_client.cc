#include "plugin/peer_client.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/sync_stream.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "plugin/peer_service.h"
#include "plugin/status_macros.h"

namespace shoal::plugin {
namespace {

namespace pv1 = ::shoal::peer::v1;

absl::Status FromGrpc(const grpc::Status& st) {
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                      st.error_message());
}

// The blob size the server announced. It comes with the initial metadata,
// which gRPC folds into the trailers when a stream ends before any data.
absl::StatusOr<int64_t> AnnouncedSize(const grpc::ClientContext& ctx) {
  for (const auto* md :
       {&ctx.GetServerInitialMetadata(), &ctx.GetServerTrailingMetadata()}) {
    auto it = md->find(kBlobSizeMetadata);
    if (it == md->end()) continue;
    int64_t size = -1;
    if (!absl::SimpleAtoi(
            absl::string_view(it->second.data(), it->second.size()), &size) ||
        size < 0 || size > kMaxBlobSize) {
      break;
    }
    return size;
  }
  return absl::DataLossError("peer sent no valid blob size");
}

// The method FetchBlob, called with raw byte buffers so that chunk data goes
// from gRPC's receive slices into the ingest without a parse copy.
constexpr char kFetchBlobMethod[] = "/shoal.peer.v1.Peer/FetchBlob";

// One FetchBlobChunk as received: its offset, and its data as the slices of
// the message past `skip` bytes of header (kept alive by the slices).
struct RawChunk {
  int64_t offset = 0;
  std::vector<grpc::Slice> slices;
  size_t skip = 0;
  size_t length = 0;
};

// Parses `buffer` as {int64 offset = 1; bytes data = 2;} in that order, as
// the peer service writes it. DATA_LOSS for anything else.
absl::StatusOr<RawChunk> ParseChunk(const grpc::ByteBuffer& buffer) {
  using ::google::protobuf::internal::WireFormatLite;
  RawChunk chunk;
  if (!buffer.Dump(&chunk.slices).ok()) {
    return absl::DataLossError("unreadable chunk message");
  }
  // The header (two tags and two varints) is at most 17 bytes; gather it,
  // since it may straddle slices.
  uint8_t head[24];
  size_t have = 0;
  for (const grpc::Slice& s : chunk.slices) {
    size_t n = std::min(sizeof(head) - have, s.size());
    memcpy(head + have, s.begin(), n);
    have += n;
    if (have == sizeof(head)) break;
  }
  ::google::protobuf::io::CodedInputStream in(head, static_cast<int>(have));
  uint32_t tag = in.ReadTag();
  uint64_t offset = 0;
  if (tag == WireFormatLite::MakeTag(1, WireFormatLite::WIRETYPE_VARINT)) {
    if (!in.ReadVarint64(&offset) ||
        offset > static_cast<uint64_t>(kMaxBlobSize)) {
      return absl::DataLossError("malformed chunk offset");
    }
    tag = in.ReadTag();
  }
  chunk.offset = static_cast<int64_t>(offset);
  const size_t total = buffer.Length();
  if (tag == 0 && total == static_cast<size_t>(in.CurrentPosition())) {
    chunk.skip = total;  // No data field: an empty chunk.
    return chunk;
  }
  uint32_t length = 0;
  if (tag != WireFormatLite::MakeTag(
                 2, WireFormatLite::WIRETYPE_LENGTH_DELIMITED) ||
      !in.ReadVarint32(&length)) {
    return absl::DataLossError("malformed chunk message");
  }
  chunk.skip = static_cast<size_t>(in.CurrentPosition());
  chunk.length = length;
  if (chunk.skip + chunk.length != total) {
    return absl::DataLossError("chunk message has unexpected fields");
  }
  return chunk;
}

// Appends chunks to an ingest on a second thread, so that writing and
// hashing (about one core's worth at full speed) overlap with receiving
// (about another). The writer must not be touched by anyone else until
// Finish() returns.
class AppendPipeline {
 public:
  explicit AppendPipeline(IngestWriter& writer)
      : writer_(writer), thread_([this] { Run(); }) {}

  ~AppendPipeline() { Finish().IgnoreError(); }

  // Queues `chunk`, waiting while kDepth chunks are queued. Returns the
  // first append error, after which nothing more is appended.
  absl::Status Push(RawChunk chunk) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](AppendPipeline* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
          return p->queue_.size() < kDepth || !p->error_.ok();
        },
        this));
    if (!error_.ok()) return error_;
    queue_.push_back(std::move(chunk));
    return absl::OkStatus();
  }

  // Waits until every queued chunk is appended; returns the first error.
  absl::Status Finish() {
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
    }
    if (thread_.joinable()) thread_.join();
    absl::MutexLock lock(&mu_);
    return error_;
  }

 private:
  // Chunks in flight between the threads: 8 MiB of 1 MiB chunks.
  static constexpr size_t kDepth = 8;

  void Run() {
    while (true) {
      RawChunk chunk;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](AppendPipeline* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
              return !p->queue_.empty() || p->closed_;
            },
            this));
        if (queue_.empty()) return;  // Closed and drained.
        chunk = std::move(queue_.front());
        queue_.pop_front();
      }
      absl::Status st = AppendChunk(chunk);
      if (!st.ok()) {
        absl::MutexLock lock(&mu_);
        error_ = st;
        queue_.clear();
        return;
      }
    }
  }

  absl::Status AppendChunk(const RawChunk& chunk) {
    size_t skip = chunk.skip;
    for (const grpc::Slice& s : chunk.slices) {
      if (skip >= s.size()) {
        skip -= s.size();
        continue;
      }
      absl::Status st = writer_.Append(absl::string_view(
          reinterpret_cast<const char*>(s.begin()) + skip, s.size() - skip));
      if (!st.ok()) return st;
      skip = 0;
    }
    return absl::OkStatus();
  }

  IngestWriter& writer_;
  absl::Mutex mu_;
  std::deque<RawChunk> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // Last: starts after the members it uses.
};

}  // namespace

absl::StatusOr<int64_t> FetchBlobInto(
    grpc::ChannelInterface& channel, absl::string_view digest,
    int64_t expected_size, IngestWriter& writer, absl::Duration timeout,
    grpc::ClientContext* call_ctx, std::atomic<int64_t>* received) {
  grpc::ClientContext own_ctx;
  grpc::ClientContext& ctx = call_ctx != nullptr ? *call_ctx : own_ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  pv1::FetchBlobRequest req;
  req.set_digest(std::string(digest));
  req.set_offset(writer.offset());
  const grpc::internal::RpcMethod method(
      kFetchBlobMethod, grpc::internal::RpcMethod::SERVER_STREAMING);
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
          &channel, method, &ctx, req));

  int64_t size = -1;
  int64_t next = writer.offset();
  absl::Status st = absl::OkStatus();
  AppendPipeline pipeline(writer);  // Owns `writer` until Finish().
  grpc::ByteBuffer buffer;
  while (st.ok() && reader->Read(&buffer)) {
    if (size < 0) {
      absl::StatusOr<int64_t> announced = AnnouncedSize(ctx);
      if (!announced.ok()) {
        st = announced.status();
      } else if (expected_size > 0 && *announced != expected_size) {
        st = absl::DataLossError(absl::StrCat(
            "peer announced ", *announced, " bytes, expected ", expected_size));
      }
      size = announced.value_or(-1);
    }
    absl::StatusOr<RawChunk> chunk = ParseChunk(buffer);
    buffer.Clear();
    if (st.ok() && !chunk.ok()) st = chunk.status();
    if (st.ok() && chunk->offset != next) {
      st = absl::DataLossError(absl::StrCat("peer sent offset ", chunk->offset,
                                            ", expected ", next));
    }
    if (st.ok() && next + static_cast<int64_t>(chunk->length) > size) {
      st = absl::DataLossError("peer sent more data than the blob holds");
    }
    if (st.ok()) {
      next += static_cast<int64_t>(chunk->length);
      if (received != nullptr) {
        received->fetch_add(static_cast<int64_t>(chunk->length),
                            std::memory_order_relaxed);
      }
      st = pipeline.Push(*std::move(chunk));
    }
  }
  absl::Status appended = pipeline.Finish();
  if (st.ok()) st = appended;
  if (!st.ok()) {
    ctx.TryCancel();
    reader->Finish().IgnoreError();
    return st;
  }
  SHOAL_RETURN_IF_ERROR(FromGrpc(reader->Finish()));
  if (size < 0) {  // An empty blob, or an empty tail: no chunk came.
    SHOAL_ASSIGN_OR_RETURN(size, AnnouncedSize(ctx));
  }
  if (writer.offset() != size) {
    return absl::DataLossError(absl::StrCat(
        "peer stream ended at ", writer.offset(), " of ", size, " bytes"));
  }
  return size;
}

}  // namespace shoal::plugin
