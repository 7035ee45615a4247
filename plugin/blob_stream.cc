#include "plugin/blob_stream.h"

#include <glog/logging.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>
#include <utility>

namespace shoal::plugin {

std::string EncodeChunkHeader(int64_t offset, size_t length) {
  using ::google::protobuf::internal::WireFormatLite;
  constexpr int kOffsetField = 1;
  constexpr int kDataField = 2;
  std::string out;
  google::protobuf::io::StringOutputStream raw(&out);
  google::protobuf::io::CodedOutputStream coded(&raw);
  if (offset != 0) {
    coded.WriteTag(
        WireFormatLite::MakeTag(kOffsetField, WireFormatLite::WIRETYPE_VARINT));
    coded.WriteVarint64(static_cast<uint64_t>(offset));
  }
  coded.WriteTag(WireFormatLite::MakeTag(
      kDataField, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  coded.WriteVarint32(static_cast<uint32_t>(length));
  coded.Trim();
  return out;
}

BlobStreamReactor::BlobStreamReactor(const char* rpc,
                                     std::shared_ptr<const BlobReader> reader,
                                     int64_t offset, int64_t length,
                                     std::function<void()> on_done,
                                     StreamShaper* shaper)
    : rpc_(rpc),
      reader_(std::move(reader)),
      offset_(offset),
      remaining_(length),
      on_done_(std::move(on_done)),
      shaper_(shaper) {
  SendNext();
}

void BlobStreamReactor::OnWriteDone(bool ok) {
  if (!ok) {
    Finish(grpc::Status::CANCELLED);  // The client went away.
    return;
  }
  SendNext();
}

void BlobStreamReactor::OnDone() {
  if (on_done_) on_done_();
  delete this;
}

void BlobStreamReactor::SendNext() {
  if (remaining_ == 0) {
    Finish(grpc::Status::OK);
    return;
  }
  size_t want = std::min<int64_t>(remaining_, kReadChunkBytes);
  grpc::Slice data(grpc_slice_malloc(want), grpc::Slice::STEAL_REF);
  absl::StatusOr<size_t> got = reader_->ReadAt(
      offset_, reinterpret_cast<char*>(const_cast<uint8_t*>(data.begin())),
      want);
  if (!got.ok()) {
    LOG_EVERY_T(WARNING, 10) << "blob: read failed rpc=" << rpc_
                             << " error=" << got.status() << " (rate limited)";
    Finish(grpc::Status(grpc::StatusCode::INTERNAL,
                        std::string(got.status().message())));
    return;
  }
  if (*got == 0) {  // Shorter than its size: truncated underneath us.
    Finish(grpc::Status::OK);
    return;
  }
  if (shaper_ != nullptr) {
    shaper_->OnChunk(
        reinterpret_cast<char*>(const_cast<uint8_t*>(data.begin())), *got);
  }
  grpc::Slice slices[2] = {grpc::Slice(EncodeChunkHeader(offset_, *got)),
                           data.sub(0, *got)};
  buffer_ = grpc::ByteBuffer(slices, 2);
  offset_ += *got;
  remaining_ -= *got;
  if (shaper_ != nullptr) {
    // No write is pending and Finish() was not called, so gRPC cannot end
    // the stream (and delete this) before the send runs.
    shaper_->Pace(*got, [this] { StartSend(); });
  } else {
    StartSend();
  }
}

void BlobStreamReactor::StartSend() {
  if (remaining_ == 0) {
    StartWriteAndFinish(&buffer_, grpc::WriteOptions(), grpc::Status::OK);
  } else {
    StartWrite(&buffer_);
  }
}

}  // namespace shoal::plugin
