// The fetching side of Shoal's blob transfer: streams a blob from a peer's
// shoal.peer.v1.Peer service into an ingest. The bytes are hashed as they
// land (IngestWriter), so the caller verifies the digest at commit; nothing
// unverified becomes a blob. Thread-compatible: one call per writer.
#ifndef SHOAL_PLUGIN_PEER_CLIENT_H_
#define SHOAL_PLUGIN_PEER_CLIENT_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "plugin/store.h"
#include "shoal/peer/v1/peer.grpc.pb.h"

namespace shoal::plugin {

// Appends blob `digest` from the peer behind `stub` to `writer`, from
// writer.offset() to the blob's end, within `timeout`. `expected_size` > 0
// must match the size the peer announces. Returns the blob's size.
// Errors: the peer's NOT_FOUND and friends as sent; DATA_LOSS when the peer
// breaks the protocol (wrong size, gaps, too much data), after which the
// ingest holds only the bytes that arrived in order; DEADLINE_EXCEEDED;
// UNAVAILABLE when the connection fails. On any error the ingest keeps what
// arrived, so another peer can continue from writer.offset().
// `ctx`, when given, is used for the call (so another thread can
// TryCancel() it; the call then fails with UNAVAILABLE or CANCELLED) and
// must be fresh; the deadline is set here. `received`, when given, counts
// the bytes received so far, for watchers on other threads.
absl::StatusOr<int64_t> FetchBlobInto(::shoal::peer::v1::Peer::Stub& stub,
                                      absl::string_view digest,
                                      int64_t expected_size,
                                      IngestWriter& writer,
                                      absl::Duration timeout,
                                      grpc::ClientContext* ctx = nullptr,
                                      std::atomic<int64_t>* received = nullptr);

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_PEER_CLIENT_H_
