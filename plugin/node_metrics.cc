#include "plugin/node_metrics.h"

#include <string>

namespace shoal::plugin {
namespace {

constexpr absl::string_view kLookupOutcomes[] = {"found", "not_found",
                                                 "timeout", "error"};
constexpr FetchFailure kFetchFailures[] = {
    FetchFailure::kUnavailable, FetchFailure::kCorrupt,
    FetchFailure::kNotFound,    FetchFailure::kTimeout,
    FetchFailure::kProtocol,    FetchFailure::kBusy,
    FetchFailure::kOther};

}  // namespace

absl::string_view FetchFailureName(FetchFailure reason) {
  switch (reason) {
    case FetchFailure::kUnavailable:
      return "unavailable";
    case FetchFailure::kCorrupt:
      return "corrupt";
    case FetchFailure::kNotFound:
      return "not_found";
    case FetchFailure::kTimeout:
      return "timeout";
    case FetchFailure::kProtocol:
      return "protocol";
    case FetchFailure::kBusy:
      return "busy";
    case FetchFailure::kOther:
      return "other";
  }
  return "other";
}

NodeMetrics::NodeMetrics(MetricsRegistry& registry) : registry_(registry) {
  peer_received_bytes_ = registry.GetCounter(
      "shoal_peer_received_bytes_total",
      "Blob bytes received from peers into ingests, verified or not.");
  upstream_written_bytes_ = registry.GetCounter(
      "shoal_upstream_written_bytes_total",
      "Blob bytes containerd wrote itself (downloaded from a registry or "
      "imported).");
  peer_served_bytes_ =
      registry.GetCounter("shoal_peer_served_bytes_total",
                          "Blob bytes sent to other nodes' fetches.");
  const std::string pulls_help =
      "Blobs containerd asked to write with a known digest, by where their "
      "bytes came from.";
  pulls_from_peer_ = registry.GetCounter("shoal_blob_pulls_total", pulls_help,
                                         {{"source", "peer"}});
  pulls_from_upstream_ = registry.GetCounter(
      "shoal_blob_pulls_total", pulls_help, {{"source", "upstream"}});
  fetch_dedups_ = registry.GetCounter(
      "shoal_peer_fetch_dedup_total",
      "Fills that waited for a fetch of the same digest already running "
      "instead of starting their own.");
  served_corrupted_ = registry.GetCounter(
      "shoal_fault_corrupted_uploads_total",
      "Chunks served to peers with deliberately corrupted bytes "
      "(--fault_corrupt_uploads; always 0 in production).");
  const std::string lookups_help =
      "DHT provider lookups made to fill a blob, by outcome.";
  for (int i = 0; i < 4; ++i) {
    lookups_[i] =
        registry.GetCounter("shoal_lookups_total", lookups_help,
                            {{"outcome", std::string(kLookupOutcomes[i])}});
  }
  lookup_seconds_ = registry.GetHistogram(
      "shoal_lookup_duration_seconds",
      "Time from asking the DHT for a blob's providers to the answer or the "
      "resolve timeout.",
      LatencyBuckets());
  const std::string failures_help =
      "Failed attempts to fetch a blob from one peer, by reason.";
  for (FetchFailure reason : kFetchFailures) {
    fetch_failures_[static_cast<int>(reason)] = registry.GetCounter(
        "shoal_peer_fetch_failures_total", failures_help,
        {{"reason", std::string(FetchFailureName(reason))}});
  }
}

void NodeMetrics::RecordLookup(LookupOutcome outcome, double seconds) {
  lookups_[static_cast<int>(outcome)]->Add();
  lookup_seconds_->Observe(seconds);
}

void NodeMetrics::RecordFetchFailure(FetchFailure reason) {
  fetch_failures_[static_cast<int>(reason)]->Add();
}

}  // namespace shoal::plugin
