#include "plugin/peer_client.h"

#include <deque>
#include <string>
#include <thread>

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

// Appends chunks to an ingest on a second thread, so that writing and
// hashing (about one core's worth at full speed) overlap with receiving
// (about another). The writer must not be touched by anyone else until
// Finish() returns.
class AppendPipeline {
 public:
  explicit AppendPipeline(IngestWriter& writer)
      : writer_(writer), thread_([this] { Run(); }) {}

  ~AppendPipeline() { Finish().IgnoreError(); }

  // Queues `data`, waiting while kDepth chunks are queued. Returns the first
  // append error, after which nothing more is appended.
  absl::Status Push(std::string data) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](AppendPipeline* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
          return p->queue_.size() < kDepth || !p->error_.ok();
        },
        this));
    if (!error_.ok()) return error_;
    queue_.push_back(std::move(data));
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
      std::string data;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](AppendPipeline* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
              return !p->queue_.empty() || p->closed_;
            },
            this));
        if (queue_.empty()) return;  // Closed and drained.
        data = std::move(queue_.front());
        queue_.pop_front();
      }
      absl::Status st = writer_.Append(data);
      if (!st.ok()) {
        absl::MutexLock lock(&mu_);
        error_ = st;
        queue_.clear();
        return;
      }
    }
  }

  IngestWriter& writer_;
  absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // Last: starts after the members it uses.
};

}  // namespace

absl::StatusOr<int64_t> FetchBlobInto(
    pv1::Peer::Stub& stub, absl::string_view digest, int64_t expected_size,
    IngestWriter& writer, absl::Duration timeout, grpc::ClientContext* call_ctx,
    std::atomic<int64_t>* received) {
  grpc::ClientContext own_ctx;
  grpc::ClientContext& ctx = call_ctx != nullptr ? *call_ctx : own_ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  pv1::FetchBlobRequest req;
  req.set_digest(std::string(digest));
  req.set_offset(writer.offset());
  std::unique_ptr<grpc::ClientReader<pv1::FetchBlobChunk>> reader =
      stub.FetchBlob(&ctx, req);

  int64_t size = -1;
  int64_t next = writer.offset();
  absl::Status st = absl::OkStatus();
  AppendPipeline pipeline(writer);  // Owns `writer` until Finish().
  pv1::FetchBlobChunk chunk;
  while (st.ok() && reader->Read(&chunk)) {
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
    if (st.ok() && chunk.offset() != next) {
      st = absl::DataLossError(absl::StrCat("peer sent offset ", chunk.offset(),
                                            ", expected ", next));
    }
    if (st.ok() && next + static_cast<int64_t>(chunk.data().size()) > size) {
      st = absl::DataLossError("peer sent more data than the blob holds");
    }
    if (st.ok()) {
      next += chunk.data().size();
      if (received != nullptr) {
        received->fetch_add(static_cast<int64_t>(chunk.data().size()),
                            std::memory_order_relaxed);
      }
      st = pipeline.Push(std::move(*chunk.mutable_data()));
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
