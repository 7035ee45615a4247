// The metrics shoald exports, in one place so their names and help texts are
// defined once and every component records into the same series. Components
// take a NodeMetrics* that outlives them; tests give each component its own.
#ifndef SHOAL_PLUGIN_NODE_METRICS_H_
#define SHOAL_PLUGIN_NODE_METRICS_H_

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "plugin/metrics.h"

namespace shoal::plugin {

// Outcome of one provider lookup in the DHT.
enum class LookupOutcome { kFound, kNotFound, kTimeout, kError };

// Why one attempt to fetch a blob from one peer failed.
enum class FetchFailure {
  kUnavailable,  // connection refused or broken
  kCorrupt,      // the bytes did not hash to the digest
  kNotFound,     // the peer no longer has the blob (a stale record)
  kTimeout,      // the fetch did not finish within its deadline
  kProtocol,     // wrong size, gaps, too much data
  kBusy,         // the peer's stream slots for us were all taken
  kOther,        // anything else (local disk error, ...)
};

class NodeMetrics {
 public:
  // Registers every series in `registry`, which must outlive this.
  explicit NodeMetrics(MetricsRegistry& registry);
  // With a registry of its own, for components given no metrics (tests).
  NodeMetrics() : NodeMetrics(std::make_unique<MetricsRegistry>()) {}

  MetricsRegistry& registry() { return registry_; }

  Counter& peer_received_bytes() { return *peer_received_bytes_; }
  Counter& upstream_written_bytes() { return *upstream_written_bytes_; }
  Counter& peer_served_bytes() { return *peer_served_bytes_; }
  Counter& pulls_from_peer() { return *pulls_from_peer_; }
  Counter& pulls_from_upstream() { return *pulls_from_upstream_; }
  Counter& fetch_dedups() { return *fetch_dedups_; }
  Counter& served_corrupted() { return *served_corrupted_; }

  void RecordLookup(LookupOutcome outcome, double seconds);
  void RecordFetchFailure(FetchFailure reason);

 private:
  explicit NodeMetrics(std::unique_ptr<MetricsRegistry> own)
      : NodeMetrics(*own) {
    own_registry_ = std::move(own);
  }

  std::unique_ptr<MetricsRegistry> own_registry_;  // Null if borrowed.
  MetricsRegistry& registry_;
  Counter* peer_received_bytes_;
  Counter* upstream_written_bytes_;
  Counter* peer_served_bytes_;
  Counter* pulls_from_peer_;
  Counter* pulls_from_upstream_;
  Counter* fetch_dedups_;
  Counter* served_corrupted_;
  Counter* lookups_[4];
  Histogram* lookup_seconds_;
  Counter* fetch_failures_[7];
};

// Label value of `reason` ("unavailable", "corrupt", ...).
absl::string_view FetchFailureName(FetchFailure reason);

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_NODE_METRICS_H_
