#include "plugin/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "glog/logging.h"

namespace shoal::plugin {
namespace {

// Adds with a compare-exchange loop: std::atomic<double> has no fetch_add
// before C++20.
void AtomicAdd(std::atomic<double>& value, double v) {
  double old = value.load(std::memory_order_relaxed);
  while (
      !value.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
  }
}

bool IsValidName(absl::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '_' || (allow_colon && c == ':') ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Prometheus data model: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names
// [a-zA-Z_][a-zA-Z0-9_]*, label names starting "__" reserved.
void CheckNames(const std::string& name, const MetricLabels& labels,
                bool histogram) {
  CHECK(IsValidName(name, /*allow_colon=*/true))
      << "metrics: invalid metric name=\"" << name << "\"";
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& label = labels[i].first;
    CHECK(IsValidName(label, /*allow_colon=*/false) &&
          label.compare(0, 2, "__") != 0)
        << "metrics: invalid label name=\"" << label << "\" metric=" << name;
    CHECK(!histogram || label != "le")
        << "metrics: histogram label \"le\" is reserved metric=" << name;
    for (size_t j = 0; j < i; ++j) {
      CHECK(labels[j].first != label)
          << "metrics: duplicate label name=" << label << " metric=" << name;
    }
  }
}

// Label values may hold any UTF-8; the format escapes backslash, double
// quote and newline.
std::string EscapeLabelValue(absl::string_view v) {
  return absl::StrReplaceAll(v,
                             {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
}

// HELP text escapes only backslash and newline.
std::string EscapeHelp(absl::string_view v) {
  return absl::StrReplaceAll(v, {{"\\", "\\\\"}, {"\n", "\\n"}});
}

// Integers below 2^63 print as integers: byte counts reach 1e9 and beyond,
// and "%g" would print 1.07374e+09, losing digits. Other values get the
// shortest "%.*g" that reads back to the same double.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  constexpr double kTwoTo63 = 9223372036854775808.0;
  if (v == std::trunc(v) && std::fabs(v) < kTwoTo63) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  char buf[32];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// `a="x",b="y"`, the inside of a series' braces.
std::string RenderLabels(const MetricLabels& labels) {
  return absl::StrJoin(labels, ",", [](std::string* out, const auto& label) {
    absl::StrAppend(out, label.first, "=\"", EscapeLabelValue(label.second),
                    "\"");
  });
}

// `name{labels} value\n`, or `name value\n` without labels.
void AppendSample(std::string* out, absl::string_view name,
                  absl::string_view labels, absl::string_view value) {
  if (labels.empty()) {
    absl::StrAppend(out, name, " ", value, "\n");
  } else {
    absl::StrAppend(out, name, "{", labels, "} ", value, "\n");
  }
}

// The _bucket series (cumulative, ending with le="+Inf"), _sum and _count of
// one histogram series.
void AppendHistogram(std::string* out, const std::string& name,
                     const std::string& labels, const Histogram& histogram) {
  std::vector<uint64_t> cumulative;
  double sum;
  histogram.Read(&cumulative, &sum);
  const std::vector<double>& bounds = histogram.upper_bounds();
  const std::string prefix = labels.empty() ? "" : labels + ",";
  const std::string bucket = name + "_bucket";
  for (size_t i = 0; i < bounds.size(); ++i) {
    AppendSample(out, bucket,
                 absl::StrCat(prefix, "le=\"", FormatValue(bounds[i]), "\""),
                 absl::StrCat(cumulative[i]));
  }
  const std::string count = absl::StrCat(cumulative.back());
  AppendSample(out, bucket, absl::StrCat(prefix, "le=\"+Inf\""), count);
  AppendSample(out, name + "_sum", labels, FormatValue(sum));
  AppendSample(out, name + "_count", labels, count);
}

std::vector<double> NormalizedBounds(std::vector<double> bounds) {
  if (!bounds.empty() &&
      bounds.back() == std::numeric_limits<double>::infinity()) {
    bounds.pop_back();
  }
  for (size_t i = 0; i < bounds.size(); ++i) {
    CHECK(!std::isnan(bounds[i])) << "metrics: NaN histogram bound";
    CHECK(i == 0 || bounds[i - 1] < bounds[i])
        << "metrics: histogram bounds not strictly increasing at index=" << i;
  }
  return bounds;
}

}  // namespace

void Counter::Add(double v) {
  // `!(v >= 0)` also catches NaN, which would poison the counter for good.
  if (!(v >= 0)) {
    DCHECK(false) << "metrics: counter decrement v=" << v;
    return;
  }
  AtomicAdd(value_, v);
}

void Gauge::Add(double v) { AtomicAdd(value_, v); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(NormalizedBounds(std::move(upper_bounds))),
      counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  // The first bound >= v; NaN compares false with everything, so it is sent
  // to the +Inf slot explicitly.
  const size_t slot = std::isnan(v) ? upper_bounds_.size()
                                    : std::lower_bound(upper_bounds_.begin(),
                                                       upper_bounds_.end(), v) -
                                          upper_bounds_.begin();
  absl::MutexLock lock(&mu_);
  ++counts_[slot];
  sum_ += v;
}

uint64_t Histogram::Count() const {
  std::vector<uint64_t> cumulative;
  double sum;
  Read(&cumulative, &sum);
  return cumulative.back();
}

double Histogram::Sum() const {
  absl::MutexLock lock(&mu_);
  return sum_;
}

void Histogram::Read(std::vector<uint64_t>* cumulative, double* sum) const {
  absl::MutexLock lock(&mu_);
  cumulative->resize(counts_.size());
  uint64_t total = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    total += counts_[i];
    (*cumulative)[i] = total;
  }
  *sum = sum_;
}

// One labelled series; exactly one of the value members is set. Immutable
// after registration except for the metric's own value, so Render() reads it
// without the registry lock.
struct MetricsRegistry::Series {
  std::string rendered_labels;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::unique_ptr<Histogram> histogram;
  std::function<double()> callback;
};

struct MetricsRegistry::Family {
  std::string name;
  std::string help;
  Type type;
  // Registration order, the render order.
  std::vector<std::unique_ptr<Series>> series;
  // Sorted labels -> series, so label order does not make a new series.
  std::map<MetricLabels, Series*> by_labels;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Family* MetricsRegistry::FindOrAddFamilyLocked(
    const std::string& name, const std::string& help, Type type) {
  auto it = families_.find(name);
  if (it != families_.end()) {
    CHECK(it->second->type == type)
        << "metrics: name registered with another type name=" << name;
    return it->second.get();
  }

  std::vector<std::string> samples = {name};
  if (type == Type::kHistogram) {
    samples = {name, name + "_bucket", name + "_sum", name + "_count"};
  }
  for (const std::string& sample : samples) {
    auto [clash, inserted] = sample_names_.emplace(sample, name);
    CHECK(inserted) << "metrics: sample name=" << sample
                    << " clashes with family=" << clash->second;
  }

  auto family = std::make_unique<Family>();
  family->name = name;
  family->help = help;
  family->type = type;
  Family* raw = family.get();
  families_.emplace(name, std::move(family));
  return raw;
}

MetricsRegistry::Series* MetricsRegistry::FindOrAddSeriesLocked(
    const std::string& name, const std::string& help, Type type,
    MetricLabels labels, bool* created) {
  CheckNames(name, labels, type == Type::kHistogram);
  Family* family = FindOrAddFamilyLocked(name, help, type);

  MetricLabels key = labels;
  std::sort(key.begin(), key.end());
  auto it = family->by_labels.find(key);
  if (it != family->by_labels.end()) {
    *created = false;
    return it->second;
  }

  auto series = std::make_unique<Series>();
  series->rendered_labels = RenderLabels(labels);
  Series* raw = series.get();
  family->series.push_back(std::move(series));
  family->by_labels.emplace(std::move(key), raw);
  *created = true;
  return raw;
}

Counter* MetricsRegistry::GetCounter(const std::string& name,
                                     const std::string& help,
                                     MetricLabels labels) {
  absl::MutexLock lock(&mu_);
  bool created;
  Series* series = FindOrAddSeriesLocked(name, help, Type::kCounter,
                                         std::move(labels), &created);
  if (created) series->counter = std::make_unique<Counter>();
  return series->counter.get();
}

Gauge* MetricsRegistry::GetGauge(const std::string& name,
                                 const std::string& help, MetricLabels labels) {
  absl::MutexLock lock(&mu_);
  bool created;
  Series* series = FindOrAddSeriesLocked(name, help, Type::kGauge,
                                         std::move(labels), &created);
  if (created) series->gauge = std::make_unique<Gauge>();
  CHECK(series->gauge != nullptr)
      << "metrics: series is a callback gauge name=" << name;
  return series->gauge.get();
}

Histogram* MetricsRegistry::GetHistogram(const std::string& name,
                                         const std::string& help,
                                         std::vector<double> upper_bounds,
                                         MetricLabels labels) {
  auto histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  absl::MutexLock lock(&mu_);
  bool created;
  Series* series = FindOrAddSeriesLocked(name, help, Type::kHistogram,
                                         std::move(labels), &created);
  if (created) {
    series->histogram = std::move(histogram);
  } else {
    CHECK(series->histogram->upper_bounds() == histogram->upper_bounds())
        << "metrics: histogram registered with other bounds name=" << name;
  }
  return series->histogram.get();
}

void MetricsRegistry::AddCallbackGauge(const std::string& name,
                                       const std::string& help,
                                       MetricLabels labels,
                                       std::function<double()> fn) {
  CHECK(fn != nullptr) << "metrics: empty callback name=" << name;
  absl::MutexLock lock(&mu_);
  bool created;
  Series* series = FindOrAddSeriesLocked(name, help, Type::kGauge,
                                         std::move(labels), &created);
  CHECK(created) << "metrics: series already registered name=" << name
                 << " labels={" << series->rendered_labels << "}";
  series->callback = std::move(fn);
}

std::string MetricsRegistry::Render() const {
  // Copy the family and series pointers under the lock, then read values
  // and run callbacks without it: callbacks may be slow or take other
  // locks, and registration must not wait for a scrape.
  std::vector<std::pair<const Family*, std::vector<const Series*>>> families;
  {
    absl::MutexLock lock(&mu_);
    families.reserve(families_.size());
    for (const auto& [name, family] : families_) {
      std::vector<const Series*> series;
      series.reserve(family->series.size());
      for (const auto& s : family->series) series.push_back(s.get());
      families.emplace_back(family.get(), std::move(series));
    }
  }

  std::string out;
  for (const auto& [family, series_list] : families) {
    const std::string& name = family->name;
    if (!family->help.empty()) {
      absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(family->help),
                      "\n");
    }
    static constexpr const char* kTypeNames[] = {"counter", "gauge",
                                                 "histogram"};
    absl::StrAppend(&out, "# TYPE ", name, " ",
                    kTypeNames[static_cast<int>(family->type)], "\n");

    for (const Series* s : series_list) {
      if (s->counter != nullptr) {
        AppendSample(&out, name, s->rendered_labels,
                     FormatValue(s->counter->Value()));
      } else if (s->gauge != nullptr) {
        AppendSample(&out, name, s->rendered_labels,
                     FormatValue(s->gauge->Value()));
      } else if (s->callback != nullptr) {
        AppendSample(&out, name, s->rendered_labels,
                     FormatValue(s->callback()));
      } else {
        AppendHistogram(&out, name, s->rendered_labels, *s->histogram);
      }
    }
  }
  return out;
}

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
}

}  // namespace shoal::plugin
