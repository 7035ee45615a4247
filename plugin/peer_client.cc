#include "plugin/peer_client.h"

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

}  // namespace

absl::StatusOr<int64_t> FetchBlobInto(pv1::Peer::Stub& stub,
                                      absl::string_view digest,
                                      int64_t expected_size,
                                      IngestWriter& writer,
                                      absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  pv1::FetchBlobRequest req;
  req.set_digest(std::string(digest));
  req.set_offset(writer.offset());
  std::unique_ptr<grpc::ClientReader<pv1::FetchBlobChunk>> reader =
      stub.FetchBlob(&ctx, req);

  int64_t size = -1;
  absl::Status st = absl::OkStatus();
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
    if (st.ok() && chunk.offset() != writer.offset()) {
      st = absl::DataLossError(absl::StrCat("peer sent offset ", chunk.offset(),
                                            ", expected ", writer.offset()));
    }
    if (st.ok() &&
        writer.offset() + static_cast<int64_t>(chunk.data().size()) > size) {
      st = absl::DataLossError("peer sent more data than the blob holds");
    }
    if (st.ok()) st = writer.Append(chunk.data());
  }
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
