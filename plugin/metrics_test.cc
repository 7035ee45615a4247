#include "plugin/metrics.h"

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shoal::plugin {
namespace {

using ::testing::HasSubstr;

TEST(MetricsRegistry, RendersCounterWithAndWithoutLabels) {
  MetricsRegistry registry;
  registry.GetCounter("shoal_requests_total", "Requests served.")->Add();
  Counter* reads = registry.GetCounter("shoal_rpc_total", "Calls by rpc.",
                                       {{"rpc", "Read"}, {"code", "OK"}});
  reads->Add(2);
  reads->Add(0.5);

  EXPECT_EQ(registry.Render(),
            "# HELP shoal_requests_total Requests served.\n"
            "# TYPE shoal_requests_total counter\n"
            "shoal_requests_total 1\n"
            "# HELP shoal_rpc_total Calls by rpc.\n"
            "# TYPE shoal_rpc_total counter\n"
            "shoal_rpc_total{rpc=\"Read\",code=\"OK\"} 2.5\n");
}

TEST(MetricsRegistry, RendersGaugesIncludingCallbackGauges) {
  MetricsRegistry registry;
  Gauge* open = registry.GetGauge("shoal_open", "Open things.");
  open->Set(5);
  open->Add(-7);
  double blobs = 3;
  registry.AddCallbackGauge("shoal_blobs", "Blobs held.", {{"store", "main"}},
                            [&blobs] { return blobs; });
  blobs = 4;

  EXPECT_EQ(registry.Render(),
            "# HELP shoal_blobs Blobs held.\n"
            "# TYPE shoal_blobs gauge\n"
            "shoal_blobs{store=\"main\"} 4\n"
            "# HELP shoal_open Open things.\n"
            "# TYPE shoal_open gauge\n"
            "shoal_open -2\n");
}

TEST(MetricsRegistry, RendersHistogramWithCumulativeBuckets) {
  MetricsRegistry registry;
  Histogram* h = registry.GetHistogram("shoal_latency_seconds", "Latency.",
                                       {0.005, 0.1, 1}, {{"op", "get"}});
  h->Observe(0.001);
  h->Observe(0.005);  // `le` is inclusive.
  h->Observe(0.5);
  h->Observe(30);

  EXPECT_EQ(registry.Render(),
            "# HELP shoal_latency_seconds Latency.\n"
            "# TYPE shoal_latency_seconds histogram\n"
            "shoal_latency_seconds_bucket{op=\"get\",le=\"0.005\"} 2\n"
            "shoal_latency_seconds_bucket{op=\"get\",le=\"0.1\"} 2\n"
            "shoal_latency_seconds_bucket{op=\"get\",le=\"1\"} 3\n"
            "shoal_latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"
            "shoal_latency_seconds_sum{op=\"get\"} 30.506\n"
            "shoal_latency_seconds_count{op=\"get\"} 4\n");
  EXPECT_EQ(h->Count(), 4u);
}

TEST(MetricsRegistry, RendersUnlabelledHistogram) {
  MetricsRegistry registry;
  // A trailing +Inf bound is implied and must not render twice.
  registry
      .GetHistogram("shoal_size_bytes", "Sizes.",
                    {1024, std::numeric_limits<double>::infinity()})
      ->Observe(4096);

  EXPECT_EQ(registry.Render(),
            "# HELP shoal_size_bytes Sizes.\n"
            "# TYPE shoal_size_bytes histogram\n"
            "shoal_size_bytes_bucket{le=\"1024\"} 0\n"
            "shoal_size_bytes_bucket{le=\"+Inf\"} 1\n"
            "shoal_size_bytes_sum 4096\n"
            "shoal_size_bytes_count 1\n");
}

TEST(MetricsRegistry, EscapesLabelValuesAndHelp) {
  MetricsRegistry registry;
  registry.GetCounter("shoal_x_total", "Back\\slash, \"quotes\"\nand newline.",
                      {{"path", "C:\\dir\\\"a\"\nb"}});

  EXPECT_EQ(registry.Render(),
            "# HELP shoal_x_total Back\\\\slash, \"quotes\"\\nand newline.\n"
            "# TYPE shoal_x_total counter\n"
            "shoal_x_total{path=\"C:\\\\dir\\\\\\\"a\\\"\\nb\"} 0\n");
}

TEST(MetricsRegistry, SameNameDifferentLabelsShareOneHelpAndType) {
  MetricsRegistry registry;
  registry.GetCounter("shoal_rpc_total", "First help wins.", {{"rpc", "Read"}})
      ->Add(1);
  registry.GetCounter("shoal_rpc_total", "Ignored.", {{"rpc", "Write"}})
      ->Add(2);
  registry.GetCounter("shoal_rpc_total", "Ignored.", {{"rpc", "Read"}})->Add(3);

  EXPECT_EQ(registry.Render(),
            "# HELP shoal_rpc_total First help wins.\n"
            "# TYPE shoal_rpc_total counter\n"
            "shoal_rpc_total{rpc=\"Read\"} 4\n"
            "shoal_rpc_total{rpc=\"Write\"} 2\n");
}

TEST(MetricsRegistry, SameNameAndLabelsInAnyOrderReturnSameObject) {
  MetricsRegistry registry;
  Gauge* a = registry.GetGauge("shoal_g", "G.", {{"a", "1"}, {"b", "2"}});
  Gauge* b = registry.GetGauge("shoal_g", "G.", {{"b", "2"}, {"a", "1"}});
  Gauge* c = registry.GetGauge("shoal_g", "G.", {{"a", "1"}, {"b", "3"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);

  Histogram* h1 = registry.GetHistogram("shoal_h", "H.", LatencyBuckets());
  Histogram* h2 = registry.GetHistogram("shoal_h", "H.", LatencyBuckets());
  EXPECT_EQ(h1, h2);
}

TEST(MetricsRegistry, SortsFamiliesByNameAndKeepsSeriesOrder) {
  MetricsRegistry registry;
  registry.GetCounter("zeta_total", "", {{"k", "b"}});
  registry.GetCounter("alpha_total", "");
  registry.GetCounter("zeta_total", "", {{"k", "a"}});

  // Empty help: no HELP line.
  EXPECT_EQ(registry.Render(),
            "# TYPE alpha_total counter\n"
            "alpha_total 0\n"
            "# TYPE zeta_total counter\n"
            "zeta_total{k=\"b\"} 0\n"
            "zeta_total{k=\"a\"} 0\n");
}

TEST(MetricsRegistry, RendersLargeIntegersExactlyAndFractionsRoundTrip) {
  MetricsRegistry registry;
  registry.GetGauge("a", "", {{"v", "gib"}})->Set(1073741824);
  registry.GetGauge("a", "", {{"v", "2^53"}})->Set(9007199254740992.0);
  registry.GetGauge("a", "", {{"v", "tb"}})->Set(1234567890123.0);
  registry.GetGauge("a", "", {{"v", "third"}})->Set(1.0 / 3);
  registry.GetGauge("a", "", {{"v", "tenth"}})->Set(0.1);
  registry.GetGauge("a", "", {{"v", "nan"}})->Set(std::nan(""));
  registry.GetGauge("a", "", {{"v", "-inf"}})
      ->Set(-std::numeric_limits<double>::infinity());
  Counter* bytes = registry.GetCounter("b_total", "");
  bytes->Add(1e12);
  bytes->Add(1);

  EXPECT_EQ(registry.Render(),
            "# TYPE a gauge\n"
            "a{v=\"gib\"} 1073741824\n"
            "a{v=\"2^53\"} 9007199254740992\n"
            "a{v=\"tb\"} 1234567890123\n"
            "a{v=\"third\"} 0.3333333333333333\n"
            "a{v=\"tenth\"} 0.1\n"
            "a{v=\"nan\"} NaN\n"
            "a{v=\"-inf\"} -Inf\n"
            "# TYPE b_total counter\n"
            "b_total 1000000000001\n");
}

TEST(MetricsRegistry, ConcurrentUpdatesSumExactly) {
  MetricsRegistry registry;
  Counter* counter = registry.GetCounter("c_total", "");
  Gauge* gauge = registry.GetGauge("g", "");
  Histogram* histogram = registry.GetHistogram("h", "", {1});
  constexpr int kThreads = 8;
  constexpr int kAdds = 20000;

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAdds; ++i) {
        counter->Add();
        gauge->Add(2);
        histogram->Observe(i % 2);
        // Scrapes and registrations race with the updates.
        if (i % 5000 == 0) {
          registry.Render();
          registry.GetCounter("c_total", "");
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  EXPECT_EQ(counter->Value(), kThreads * kAdds);
  EXPECT_EQ(gauge->Value(), 2.0 * kThreads * kAdds);
  EXPECT_EQ(histogram->Count(), static_cast<uint64_t>(kThreads * kAdds));
  EXPECT_EQ(histogram->Sum(), kThreads * kAdds / 2);
  EXPECT_THAT(registry.Render(), HasSubstr("c_total 160000\n"));
}

TEST(MetricsRegistry, CallbackMayUseTheRegistry) {
  MetricsRegistry registry;
  // Render() runs callbacks outside its lock; taking the lock again here
  // would deadlock otherwise.
  registry.AddCallbackGauge("g", "", {}, [&registry] {
    return registry.GetCounter("c_total", "")->Value() + 1;
  });
  EXPECT_THAT(registry.Render(), HasSubstr("g 1\n"));
}

TEST(Histogram, NaNObservationLandsInInfBucket) {
  Histogram h({1, 2});
  h.Observe(std::nan(""));
  std::vector<uint64_t> cumulative;
  double sum;
  h.Read(&cumulative, &sum);
  EXPECT_EQ(cumulative, (std::vector<uint64_t>{0, 0, 1}));
  EXPECT_TRUE(std::isnan(sum));
}

TEST(Counter, NegativeAddIsIgnored) {
  Counter c;
  c.Add(3);
  EXPECT_DEBUG_DEATH(c.Add(-1), "counter decrement");
  EXPECT_EQ(c.Value(), 3);
}

TEST(LatencyBuckets, StrictlyIncreasingFromHalfMillisecondToTenSeconds) {
  std::vector<double> b = LatencyBuckets();
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.front(), 0.0005);
  EXPECT_EQ(b.back(), 10);
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
}

using MetricsRegistryDeathTest = ::testing::Test;

TEST(MetricsRegistryDeathTest, RejectsProgrammingErrors) {
  MetricsRegistry registry;
  registry.GetCounter("c_total", "");
  registry.GetHistogram("h", "", {1});
  registry.AddCallbackGauge("g", "", {}, [] { return 0; });

  EXPECT_DEATH(registry.GetGauge("c_total", ""), "another type");
  EXPECT_DEATH(registry.GetCounter("1bad", ""), "invalid metric name");
  EXPECT_DEATH(registry.GetCounter("ok", "", {{"bad-label", "x"}}),
               "invalid label name");
  EXPECT_DEATH(registry.GetCounter("ok", "", {{"__reserved", "x"}}),
               "invalid label name");
  EXPECT_DEATH(registry.GetCounter("ok", "", {{"a", "1"}, {"a", "2"}}),
               "duplicate label");
  EXPECT_DEATH(registry.GetHistogram("h2", "", {1}, {{"le", "1"}}), "reserved");
  EXPECT_DEATH(registry.GetCounter("h_count", ""), "clashes");
  EXPECT_DEATH(registry.GetHistogram("h", "", {2}), "other bounds");
  EXPECT_DEATH(registry.GetHistogram("h3", "", {2, 1}), "increasing");
  EXPECT_DEATH(registry.AddCallbackGauge("g", "", {}, [] { return 1; }),
               "already registered");
  EXPECT_DEATH(registry.GetGauge("g", ""), "callback gauge");
}

}  // namespace
}  // namespace shoal::plugin
