#include "plugin/content_service.h"

#include <glog/logging.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "plugin/blob_stream.h"
#include "plugin/status_macros.h"

namespace shoal::plugin {
namespace {

namespace cv1 = ::containerd::services::content::v1;
using ::google::protobuf::Timestamp;

// Key plus value of one label may not exceed this (content.proto).
constexpr size_t kMaxLabelBytes = 4096;
// Info messages per List response, as containerd's contentserver sends.
constexpr int kListBatch = 100;

void SetTime(absl::Time t, Timestamp* out) {
  timespec ts = absl::ToTimespec(t);
  out->set_seconds(ts.tv_sec);
  out->set_nanos(static_cast<int32_t>(ts.tv_nsec));
}

void FillStatus(const IngestStatus& in, cv1::Status* out) {
  out->set_ref(in.ref);
  out->set_offset(in.offset);
  out->set_total(in.total);
  SetTime(in.started_at, out->mutable_started_at());
  SetTime(in.updated_at, out->mutable_updated_at());
}

// Requests are rejected for bad input often enough that one log line per
// rejection could flood; VLOG has every one, WARNING at most one per 10 s.
grpc::Status Reject(absl::string_view rpc, const absl::Status& status) {
  VLOG(1) << "content: rejected rpc=" << rpc << " error=" << status;
  LOG_EVERY_T(WARNING, 10) << "content: rejected request rpc=" << rpc
                           << " error=" << status << " (rate limited)";
  return ToGrpcStatus(status);
}

absl::Status ValidateLabels(
    const ::google::protobuf::Map<std::string, std::string>& labels) {
  for (const auto& [key, value] : labels) {
    if (key.size() + value.size() > kMaxLabelBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label ", key.substr(0, 64), " exceeds ", kMaxLabelBytes, " bytes"));
    }
  }
  return absl::OkStatus();
}

// The digest a ref names, as containerd's pull handler makes them
// ("<ns>/<seq>/layer-sha256:<hex>", "...@sha256:<hex>"): what follows the
// last "sha256:". Only a hint (imports and diffs use refs without one);
// empty when there is none.
std::string DigestHint(absl::string_view ref) {
  size_t at = ref.rfind("sha256:");
  if (at == absl::string_view::npos) return "";
  std::string digest(ref.substr(at));
  return ValidateDigest(digest).ok() ? digest : "";
}

// A gRPC sync stream as a ReplyStream (Request void) or a DuplexStream.
template <typename Grpc, typename Request, typename Reply>
class GrpcStream final : public DuplexStream<Request, Reply> {
 public:
  explicit GrpcStream(Grpc* stream) : stream_(stream) {}
  bool Write(const Reply& reply) override { return stream_->Write(reply); }
  bool Read(Request* request) override {
    if constexpr (std::is_void_v<Request>) {
      return false;
    } else {
      return stream_->Read(request);
    }
  }

 private:
  Grpc* const stream_;
};

// One Write stream: the ingest it holds and the messages it has handled.
class WriteSession {
 public:
  WriteSession(BlobStore& store, Fetcher* fetcher, NodeMetrics& metrics,
               BlobPins& pins)
      : store_(store), fetcher_(fetcher), metrics_(metrics), pins_(pins) {}
  ~WriteSession() {
    if (filled_.has_value()) pins_.Unpin(filled_->digest);
  }
  WriteSession(const WriteSession&) = delete;
  WriteSession& operator=(const WriteSession&) = delete;

  // Handles the first message, which must name the ref, and opens the ingest.
  absl::Status Open(const cv1::WriteContentRequest& req) {
    if (req.ref().empty()) {
      return absl::InvalidArgumentError(
          "first message of a write stream must carry a ref");
    }
    // Totals <= 0 mean "unknown" to containerd; the store rejects bad refs
    // and absurd totals.
    absl::StatusOr<std::unique_ptr<IngestWriter>> writer =
        store_.OpenIngest(req.ref(), std::max<int64_t>(req.total(), 0));
    if (!writer.ok()) {
      switch (writer.status().code()) {
        case absl::StatusCode::kUnavailable:  // Another stream holds the ref.
        case absl::StatusCode::kInvalidArgument:
        case absl::StatusCode::kResourceExhausted:
          return writer.status();
        default:
          // Never UNAVAILABLE for anything but lock contention: containerd
          // retries that without limit when opening a writer.
          return absl::InternalError(writer.status().message());
      }
    }
    writer_ = *std::move(writer);
    digest_hint_ = DigestHint(req.ref());
    return absl::OkStatus();
  }

  // Applies one message and fills the reply.
  absl::Status Handle(const cv1::WriteContentRequest& req,
                      cv1::WriteContentResponse* resp) {
    if (!req.ref().empty() && req.ref() != writer_->ref()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ref changed within a write stream from ",
                       writer_->ref(), " to ", req.ref().substr(0, 200)));
    }
    if (!req.expected().empty()) {
      SHOAL_RETURN_IF_ERROR(ValidateDigest(req.expected()));
    }
    SHOAL_RETURN_IF_ERROR(ValidateLabels(req.labels()));
    resp->set_action(req.action());
    if (filled_.has_value()) return HandleFilled(req, resp);
    if (req.total() > 0) SHOAL_RETURN_IF_ERROR(writer_->SetTotal(req.total()));

    switch (req.action()) {
      case cv1::STAT:
        if (++stats_ == 2) MaybeFill();
        if (filled_.has_value()) return HandleFilled(req, resp);
        break;
      case cv1::WRITE:
        SHOAL_RETURN_IF_ERROR(ApplyData(req));
        break;
      case cv1::COMMIT:
        SHOAL_RETURN_IF_ERROR(ApplyData(req));
        return Commit(req, resp);
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("unknown write action ", req.action()));
    }
    FillProgress(resp);
    return absl::OkStatus();
  }

  const std::string& ref() const { return writer_->ref(); }

  // The digest of a blob the last message brought into the store from
  // peers, once; empty otherwise. containerd's COMMIT comes later.
  std::string TakeNewlyStored() { return std::exchange(newly_stored_, ""); }

 private:
  // Hook B (fetcher.h): on the stream's second STAT, never the first (it
  // runs inside containerd's metadata transaction), bring the blob in from
  // peers when the ref names a digest the store lacks and nothing was
  // written yet. When the blob is already stored (committed meanwhile by a
  // pull in another namespace) it is adopted the same way.
  void MaybeFill() {
    if (fetcher_ == nullptr || digest_hint_.empty() || wrote_data_ ||
        writer_->offset() != 0 || writer_->total() <= 0) {
      return;
    }
    // Pinned before the blob can appear, until this stream ends.
    pins_.Pin(digest_hint_);
    absl::StatusOr<BlobInfo> held = store_.Info(digest_hint_);
    if (held.ok() && held->size == writer_->total()) {
      filled_ = *held;
      return;
    }
    if (held.ok()) {
      pins_.Unpin(digest_hint_);
      return;
    }
    absl::StatusOr<BlobInfo> info =
        fetcher_->Fill(digest_hint_, writer_->total(), *writer_);
    if (info.ok()) {
      filled_ = *info;
      newly_stored_ = info->digest;
      return;
    }
    pins_.Unpin(digest_hint_);
    VLOG(1) << "content: not filled from peers ref=" << writer_->ref()
            << " reason=" << info.status();
  }

  // Messages after a fill: STATs report the whole blob, a COMMIT without
  // data (containerd's, with the stale offset of the first STAT) succeeds
  // when its size and digest match the blob, data is refused.
  absl::Status HandleFilled(const cv1::WriteContentRequest& req,
                            cv1::WriteContentResponse* resp) {
    const BlobInfo& blob = *filled_;
    if (!req.data().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("blob ", blob.digest, " of ref ", writer_->ref(),
                       " was filled from a peer; no more data is accepted"));
    }
    if (req.action() == cv1::COMMIT) {
      if ((req.total() > 0 && req.total() != blob.size) ||
          (!req.expected().empty() && req.expected() != blob.digest)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "commit of ", writer_->ref(), " expects ", req.expected(), " (",
            req.total(), " bytes) but the blob filled is ", blob.digest, " (",
            blob.size, " bytes)"));
      }
      // A concurrent fill committed the blob; this stream's ingest is empty.
      if (!writer_->committed()) SHOAL_RETURN_IF_ERROR(writer_->Discard());
    } else if (req.action() != cv1::STAT && req.action() != cv1::WRITE) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown write action ", req.action()));
    }
    resp->set_offset(blob.size);
    resp->set_total(blob.size);
    resp->set_digest(blob.digest);
    SetTime(writer_->Status().started_at, resp->mutable_started_at());
    SetTime(blob.updated_at, resp->mutable_updated_at());
    return absl::OkStatus();
  }

  // WRITE semantics of containerd's contentserver: offset 0 with data on a
  // non-empty ingest restarts it; any other offset must equal the current
  // end. Messages without data change nothing, so a COMMIT carrying a stale
  // offset (after a fill from a peer) commits what is there.
  absl::Status ApplyData(const cv1::WriteContentRequest& req) {
    if (req.data().empty()) return absl::OkStatus();
    if (req.offset() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative write offset ", req.offset()));
    }
    if (req.offset() == 0 && writer_->offset() > 0) {
      SHOAL_RETURN_IF_ERROR(writer_->Truncate());
    } else if (req.offset() != writer_->offset()) {
      return absl::OutOfRangeError(absl::StrCat(
          "write offset ", req.offset(), " does not match ingest offset ",
          writer_->offset(), " ref=", writer_->ref()));
    }
    SHOAL_RETURN_IF_ERROR(writer_->Append(req.data()));
    wrote_data_ = true;
    metrics_.upstream_written_bytes().Add(
        static_cast<double>(req.data().size()));
    return absl::OkStatus();
  }

  absl::Status Commit(const cv1::WriteContentRequest& req,
                      cv1::WriteContentResponse* resp) {
    int64_t total = req.total() > 0 ? req.total() : writer_->total();
    SHOAL_ASSIGN_OR_RETURN(BlobInfo info,
                           writer_->Commit(total, req.expected()));
    VLOG(1) << "content: committed ref=" << writer_->ref()
            << " digest=" << info.digest << " size=" << info.size;
    if (wrote_data_ && !digest_hint_.empty()) {
      metrics_.pulls_from_upstream().Add();
    }
    resp->set_offset(info.size);
    resp->set_total(info.size);
    resp->set_digest(info.digest);
    SetTime(writer_->Status().started_at, resp->mutable_started_at());
    SetTime(info.created_at, resp->mutable_updated_at());
    return absl::OkStatus();
  }

  void FillProgress(cv1::WriteContentResponse* resp) const {
    IngestStatus st = writer_->Status();
    resp->set_offset(st.offset);
    resp->set_total(st.total);
    resp->set_digest(writer_->RunningDigest());
    SetTime(st.started_at, resp->mutable_started_at());
    SetTime(st.updated_at, resp->mutable_updated_at());
  }

  BlobStore& store_;
  Fetcher* const fetcher_;  // May be null: no peers.
  NodeMetrics& metrics_;
  BlobPins& pins_;
  std::unique_ptr<IngestWriter> writer_;
  std::string digest_hint_;  // Empty when the ref names no digest.
  int stats_ = 0;
  bool wrote_data_ = false;
  // The blob, once filled from a peer (or found committed) at the second
  // STAT; every later message is answered from it.
  absl::optional<BlobInfo> filled_;
  std::string newly_stored_;
};

}  // namespace

void BlobPins::Pin(const std::string& digest) {
  absl::MutexLock lock(&mu_);
  ++count_[digest];
}

void BlobPins::Unpin(const std::string& digest) {
  absl::MutexLock lock(&mu_);
  auto it = count_.find(digest);
  if (it != count_.end() && --it->second <= 0) count_.erase(it);
}

bool BlobPins::IsPinned(const std::string& digest) {
  absl::MutexLock lock(&mu_);
  return count_.contains(digest);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::StatusOr<std::shared_ptr<const BlobReader>> BlobReaderCache::Open(
    const std::string& digest) {
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    for (const Entry& e : entries_) {
      if (e.digest == digest && now - e.opened < kMaxAge) return e.reader;
    }
  }
  SHOAL_ASSIGN_OR_RETURN(std::shared_ptr<const BlobReader> reader,
                         store_.OpenBlob(digest));
  absl::MutexLock lock(&mu_);
  EraseLocked(digest);
  if (entries_.size() == kEntries) entries_.erase(entries_.begin());
  entries_.push_back(Entry{digest, reader, now});
  return reader;
}

void BlobReaderCache::Forget(const std::string& digest) {
  absl::MutexLock lock(&mu_);
  EraseLocked(digest);
}

void BlobReaderCache::EraseLocked(const std::string& digest) {
  entries_.erase(
      std::remove_if(entries_.begin(), entries_.end(),
                     [&](const Entry& e) { return e.digest == digest; }),
      entries_.end());
}

ContentService::ContentService(BlobStore* store, BlobEvents* events,
                               Fetcher* fetcher, NodeMetrics* metrics)
    : store_(*store),
      events_(events),
      fetcher_(fetcher),
      metrics_(metrics),
      readers_(*store) {
  if (metrics_ == nullptr) {
    own_metrics_ = std::make_unique<NodeMetrics>();
    metrics_ = own_metrics_.get();
  }
}

void ContentService::FillInfo(const BlobInfo& blob, cv1::Info* out) {
  out->set_digest(blob.digest);
  out->set_size(blob.size);
  SetTime(blob.created_at, out->mutable_created_at());
  SetTime(blob.updated_at, out->mutable_updated_at());
  absl::MutexLock lock(&labels_mu_);
  auto it = labels_.find(blob.digest);
  if (it != labels_.end()) {
    out->mutable_labels()->insert(it->second.begin(), it->second.end());
  }
}

grpc::Status ContentService::Info(grpc::ServerContext*,
                                  const cv1::InfoRequest* req,
                                  cv1::InfoResponse* resp) {
  // Runs inside containerd's metadata write transaction: local state only.
  absl::StatusOr<BlobInfo> info = store_.Info(req->digest());
  if (absl::IsNotFound(info.status())) return ToGrpcStatus(info.status());
  if (!info.ok()) return Reject("Info", info.status());
  FillInfo(*info, resp->mutable_info());
  return grpc::Status::OK;
}

grpc::Status ContentService::Update(grpc::ServerContext*,
                                    const cv1::UpdateRequest* req,
                                    cv1::UpdateResponse* resp) {
  const cv1::Info& in = req->info();
  absl::StatusOr<BlobInfo> info = store_.Info(in.digest());
  if (absl::IsNotFound(info.status())) return ToGrpcStatus(info.status());
  if (!info.ok()) return Reject("Update", info.status());
  absl::Status valid = ValidateLabels(in.labels());
  if (!valid.ok()) return Reject("Update", valid);
  {
    absl::MutexLock lock(&labels_mu_);
    Labels updated = labels_[in.digest()];
    if (req->update_mask().paths().empty()) {
      updated = Labels(in.labels().begin(), in.labels().end());
    }
    for (const std::string& path : req->update_mask().paths()) {
      if (path == "labels") {
        updated = Labels(in.labels().begin(), in.labels().end());
      } else if (absl::StartsWith(path, "labels.")) {
        std::string key = path.substr(7);
        auto it = in.labels().find(key);
        if (it == in.labels().end()) {
          updated.erase(key);
        } else {
          updated[key] = it->second;
        }
      } else {
        return Reject("Update",
                      absl::InvalidArgumentError(absl::StrCat(
                          "cannot update field ", path, " of content ",
                          in.digest(), ": only labels are mutable")));
      }
    }
    labels_[in.digest()] = std::move(updated);
  }
  FillInfo(*info, resp->mutable_info());
  return grpc::Status::OK;
}

grpc::Status ContentService::List(
    grpc::ServerContext*, const cv1::ListContentRequest* req,
    grpc::ServerWriter<cv1::ListContentResponse>* writer) {
  GrpcStream<grpc::ServerWriter<cv1::ListContentResponse>, void,
             cv1::ListContentResponse>
      out(writer);
  return ListTo(*req, out);
}

grpc::Status ContentService::ListTo(
    const cv1::ListContentRequest& req,
    ReplyStream<cv1::ListContentResponse>& out) {
  if (req.filters_size() > 0) {
    // TODO: List filters (containerd's filter syntax) are not implemented;
    // containerd never sends them to a proxy store (its GC lists without
    // filters), but direct clients get UNIMPLEMENTED.
    return Reject("List", absl::UnimplementedError(
                              "content list filters are not supported"));
  }
  // A snapshot, so no lock is held while containerd's GC calls Delete from
  // inside this stream.
  absl::StatusOr<std::vector<BlobInfo>> blobs = store_.List();
  if (!blobs.ok()) return Reject("List", blobs.status());
  cv1::ListContentResponse resp;
  for (const BlobInfo& blob : *blobs) {
    FillInfo(blob, resp.add_info());
    if (resp.info_size() == kListBatch) {
      if (!out.Write(resp)) return grpc::Status::CANCELLED;
      resp.clear_info();
    }
  }
  if (resp.info_size() > 0 && !out.Write(resp)) {
    return grpc::Status::CANCELLED;
  }
  return grpc::Status::OK;
}

grpc::Status ContentService::Delete(grpc::ServerContext*,
                                    const cv1::DeleteContentRequest* req,
                                    ::google::protobuf::Empty*) {
  if (pins_.IsPinned(req->digest())) {
    // Filled from a peer for a write stream containerd has not committed
    // yet: its GC does not know the blob is about to be referenced.
    VLOG(1) << "content: kept pinned blob on delete digest=" << req->digest();
    return grpc::Status::OK;
  }
  absl::Status st = store_.Delete(req->digest());
  if (!st.ok()) return Reject("Delete", st);
  readers_.Forget(req->digest());
  {
    absl::MutexLock lock(&labels_mu_);
    labels_.erase(req->digest());
  }
  VLOG(1) << "content: deleted digest=" << req->digest();
  if (events_ != nullptr) events_->OnDeleted(req->digest());
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ContentService::Read(
    grpc::CallbackServerContext*, const grpc::ByteBuffer* raw) {
  // TODO: gRPC C++ 1.51 spends about 320 us of CPU per stream here (some 17
  // futex calls per Read), three times shoald's own HTTP/2 transport
  // (h2_server.h), which is why that transport is the default; this path
  // remains for --content_transport=grpc.
  cv1::ReadContentRequest req;
  grpc::ByteBuffer copy(*raw);
  if (!grpc::GenericDeserialize<grpc::ProtoBufferReader,
                                cv1::ReadContentRequest>(&copy, &req)
           .ok()) {
    return new FinishedStreamReactor(Reject(
        "Read", absl::InvalidArgumentError("malformed ReadContentRequest")));
  }
  ReadRange range;
  grpc::Status st = OpenRead(req, &range);
  if (!st.ok()) return new FinishedStreamReactor(st);
  return new BlobStreamReactor("Read", std::move(range.reader), range.offset,
                               range.length);
}

grpc::Status ContentService::OpenRead(const cv1::ReadContentRequest& req,
                                      ReadRange* out) {
  // containerd opens one Read stream per 32 KiB during unpack: no per-call
  // setup (the blob is open already, readers_), and logging only at VLOG(2).
  absl::StatusOr<std::shared_ptr<const BlobReader>> reader =
      readers_.Open(req.digest());
  if (absl::IsNotFound(reader.status())) return ToGrpcStatus(reader.status());
  if (!reader.ok()) return Reject("Read", reader.status());
  const int64_t blob_size = (*reader)->size();
  int64_t offset = std::max<int64_t>(req.offset(), 0);
  if (offset > blob_size) {
    return Reject("Read", absl::OutOfRangeError(absl::StrCat(
                              "read offset ", offset, " is past the end of ",
                              req.digest(), " (", blob_size, " bytes)")));
  }
  int64_t length = blob_size - offset;
  if (req.size() > 0 && req.size() < length) length = req.size();
  VLOG(2) << "content: read digest=" << req.digest() << " offset=" << offset
          << " size=" << length;
  out->reader = *std::move(reader);
  out->offset = offset;
  out->length = length;
  return grpc::Status::OK;
}

grpc::Status ContentService::Status(grpc::ServerContext*,
                                    const cv1::StatusRequest* req,
                                    cv1::StatusResponse* resp) {
  absl::StatusOr<IngestStatus> st = store_.GetIngestStatus(req->ref());
  if (absl::IsNotFound(st.status())) return ToGrpcStatus(st.status());
  if (!st.ok()) return Reject("Status", st.status());
  FillStatus(*st, resp->mutable_status());
  return grpc::Status::OK;
}

grpc::Status ContentService::ListStatuses(grpc::ServerContext*,
                                          const cv1::ListStatusesRequest* req,
                                          cv1::ListStatusesResponse* resp) {
  if (req->filters_size() > 0) {
    // TODO: ListStatuses filters are not implemented; containerd's metadata
    // layer and GC never send them, direct clients get UNIMPLEMENTED.
    return Reject(
        "ListStatuses",
        absl::UnimplementedError("ingest status filters are not supported"));
  }
  absl::StatusOr<std::vector<IngestStatus>> all = store_.ListIngests();
  if (!all.ok()) return Reject("ListStatuses", all.status());
  for (const IngestStatus& st : *all) FillStatus(st, resp->add_statuses());
  return grpc::Status::OK;
}

grpc::Status ContentService::Write(
    grpc::ServerContext*,
    grpc::ServerReaderWriter<cv1::WriteContentResponse,
                             cv1::WriteContentRequest>* stream) {
  GrpcStream<grpc::ServerReaderWriter<cv1::WriteContentResponse,
                                      cv1::WriteContentRequest>,
             cv1::WriteContentRequest, cv1::WriteContentResponse>
      duplex(stream);
  return WriteOver(duplex);
}

grpc::Status ContentService::WriteOver(
    DuplexStream<cv1::WriteContentRequest, cv1::WriteContentResponse>& stream) {
  cv1::WriteContentRequest req;
  if (!stream.Read(&req)) return grpc::Status::OK;  // Closed before a word.
  WriteSession session(store_, fetcher_, *metrics_, pins_);
  absl::Status opened = session.Open(req);
  if (absl::IsUnavailable(opened)) {
    VLOG(1) << "content: ref busy ref=" << req.ref();
    return ToGrpcStatus(opened);
  }
  if (!opened.ok()) return Reject("Write", opened);

  cv1::WriteContentResponse resp;
  while (true) {
    resp.Clear();
    absl::Status st = session.Handle(req, &resp);
    if (!st.ok()) return Reject("Write", st);
    // Before the reply: the blob is durable now, whether or not the client
    // stays to read the answer.
    if (events_ != nullptr) {
      if (req.action() == cv1::COMMIT) events_->OnCommitted(resp.digest());
      std::string fetched = session.TakeNewlyStored();
      if (!fetched.empty()) events_->OnCommitted(fetched);
    }
    if (!stream.Write(resp)) break;
    if (req.action() == cv1::COMMIT) return grpc::Status::OK;
    if (!stream.Read(&req)) break;
  }
  // The client went away or half-closed: the ingest keeps its data and the
  // ref is released when `session` goes out of scope.
  VLOG(1) << "content: write stream ended ref=" << session.ref();
  return grpc::Status::OK;
}

grpc::Status ContentService::Abort(grpc::ServerContext*,
                                   const cv1::AbortRequest* req,
                                   ::google::protobuf::Empty*) {
  absl::Status st = store_.Abort(req->ref());
  if (!st.ok()) return Reject("Abort", st);
  VLOG(1) << "content: aborted ref=" << req->ref();
  return grpc::Status::OK;
}

}  // namespace shoal::plugin
