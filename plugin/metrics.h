// A small Prometheus metrics registry: counters, gauges, histograms and
// gauges computed at scrape time, rendered in the text exposition format
// 0.0.4. Written here because Debian 12 packages no C++ Prometheus client.
// Thread-safe: metrics are updated from any thread (counters and gauges
// lock-free), and Render() may run concurrently with updates and
// registrations. Metric objects are owned by the registry and live as long
// as it does.
#ifndef SHOAL_PLUGIN_METRICS_H_
#define SHOAL_PLUGIN_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace shoal::plugin {

// Label name/value pairs of one series, e.g. {{"rpc", "Read"}}. The order
// given at the first registration is the order rendered.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing value (requests served, bytes sent).
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `v`, which must be >= 0: a counter never goes down, or Prometheus'
  // rate() would read it as a restart. A negative or NaN `v` fails a DCHECK
  // and is otherwise ignored.
  void Add(double v = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (connections open, bytes in flight).
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into buckets with fixed upper bounds (inclusive, as
// Prometheus' `le` means) and keeps their sum. Takes a small lock per
// Observe so a scrape sees buckets, sum and count from the same instant.
class Histogram {
 public:
  // `upper_bounds` must be strictly increasing and free of NaN (CHECKed);
  // a trailing +Inf is dropped because the +Inf bucket is always implied.
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // A NaN observation lands in the +Inf bucket and makes the sum NaN, as in
  // Prometheus' Go client.
  void Observe(double v);

  const std::vector<double>& upper_bounds() const { return upper_bounds_; }
  uint64_t Count() const;
  double Sum() const;

  // Cumulative count per upper bound, then the total (the +Inf bucket), and
  // the sum, read under one lock.
  void Read(std::vector<uint64_t>* cumulative, double* sum) const;

 private:
  const std::vector<double> upper_bounds_;
  mutable absl::Mutex mu_;
  // One slot per upper bound plus one for +Inf; not cumulative.
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// Holds metric families by name and renders them for a Prometheus scrape.
// Names and label names are compile-time constants in Shoal, so a bad one is
// a programming error: LOG(FATAL), not a Status.
class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Return the series `name`{`labels`}, creating it (and its family) on
  // first use; the same name and labels (in any order) return the same
  // object. The first registration of a name fixes its help text and type;
  // using the name with another type, a label name twice, an invalid name
  // (Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]*, labels [a-zA-Z_][a-zA-Z0-9_]*
  // without a leading "__"), "le" as a histogram label, a name that clashes
  // with a histogram's _bucket/_sum/_count series, or other upper bounds for
  // an existing histogram series is LOG(FATAL). The pointers stay valid for
  // the registry's lifetime. Callers on hot paths keep the pointer rather
  // than looking it up per event.
  Counter* GetCounter(const std::string& name, const std::string& help,
                      MetricLabels labels = {});
  Gauge* GetGauge(const std::string& name, const std::string& help,
                  MetricLabels labels = {});
  Histogram* GetHistogram(const std::string& name, const std::string& help,
                          std::vector<double> upper_bounds,
                          MetricLabels labels = {});

  // A gauge series whose value `fn` computes at each Render() (blobs held,
  // read from the store). `fn` runs outside the registry's lock, possibly on
  // several scraping threads at once, so it must be thread-safe; it may call
  // into the registry. It must stay callable for the registry's lifetime.
  // Registering the same name and labels twice is LOG(FATAL).
  void AddCallbackGauge(const std::string& name, const std::string& help,
                        MetricLabels labels, std::function<double()> fn);

  // The text exposition format 0.0.4 (Content-Type
  // "text/plain; version=0.0.4; charset=utf-8"): families sorted by name,
  // each with "# HELP" (omitted when the help is empty) and "# TYPE", then
  // its series in registration order. Integral values print without an
  // exponent (1073741824); others with the fewest digits that read back
  // exactly.
  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series;
  struct Family;

  // Returns the existing series or a new, empty one (`*created` true) that
  // the caller fills in before releasing the lock.
  Series* FindOrAddSeriesLocked(const std::string& name,
                                const std::string& help, Type type,
                                MetricLabels labels, bool* created)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Family* FindOrAddFamilyLocked(const std::string& name,
                                const std::string& help, Type type)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // Sorted by name, which is the render order.
  std::map<std::string, std::unique_ptr<Family>> families_ ABSL_GUARDED_BY(mu_);
  // Every sample name a family renders (a histogram "x" renders x_bucket,
  // x_sum and x_count) -> that family, so two families cannot render the
  // same sample name.
  std::map<std::string, std::string> sample_names_ ABSL_GUARDED_BY(mu_);
};

// Upper bounds in seconds for request and lookup latencies: 0.5 ms to 10 s
// in 1-2.5-5 steps, fine enough below 10 ms for local disk and LAN peers and
// long enough for a DHT lookup that times out.
std::vector<double> LatencyBuckets();

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_METRICS_H_
