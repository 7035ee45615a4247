// Observer seam between the content service and whoever wants to hear about
// blobs appearing and disappearing (the DHT advertiser), so neither the store
// nor the service knows about the DHT. Implementations must be thread-safe:
// the content service calls them from gRPC's handler threads.
#ifndef SHOAL_PLUGIN_BLOB_EVENTS_H_
#define SHOAL_PLUGIN_BLOB_EVENTS_H_

#include <string>

namespace shoal::plugin {

class BlobEvents {
 public:
  virtual ~BlobEvents() = default;

  // `digest` ("sha256:<hex>") is committed and readable; also called when a
  // COMMIT found the blob already stored. Must not block for long: it runs
  // before the COMMIT reply is sent.
  virtual void OnCommitted(const std::string& digest) = 0;

  // `digest` was deleted, or was already absent (Delete is OK for unknown
  // digests, see content_service.h).
  virtual void OnDeleted(const std::string& digest) = 0;
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_BLOB_EVENTS_H_
