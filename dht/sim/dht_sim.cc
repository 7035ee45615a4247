// Runs the DHT scenarios of scenarios.h over SimNetwork in one process and
// prints one table row per measured phase. Deterministic from --seed; all
// times are simulated. Example:
//   bazel run //dht/sim:dht_sim -- --nodes=1000 --seed=1
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dht/sim/scenarios.h"
#include "gflags/gflags.h"
#include "glog/logging.h"

DEFINE_int32(nodes, 1000, "nodes in the simulated network");
DEFINE_double(latency_ms, 0.25, "one-way latency of every link, in ms");
DEFINE_double(loss, 0.01, "probability that a datagram is lost");
DEFINE_int32(lookups, 1000, "lookups per measured phase");
DEFINE_int32(keys, 200, "keys provided before the lookups");
DEFINE_uint64(seed, 1, "seed of every random choice");
DEFINE_string(scenarios, "steady,kill10,join10,loss1,partition",
              "comma-separated scenarios to run");

namespace shoal::dht::sim {
namespace {

// Validates the flags into `config`; false (after printing why) when one is
// out of range.
bool ConfigFromFlags(SimConfig& config, std::vector<std::string>& scenarios) {
  if (FLAGS_nodes <= 0 || FLAGS_latency_ms < 0 || FLAGS_loss < 0 ||
      FLAGS_loss > 1 || FLAGS_lookups < 0 || FLAGS_keys <= 0) {
    std::fputs("dht_sim: flag out of range; see --help\n", stderr);
    return false;
  }
  config.nodes = FLAGS_nodes;
  config.latency = absl::Microseconds(FLAGS_latency_ms * 1000);
  config.loss = FLAGS_loss;
  config.lookups = FLAGS_lookups;
  config.keys = FLAGS_keys;
  config.seed = FLAGS_seed;
  scenarios = absl::StrSplit(FLAGS_scenarios, ',', absl::SkipEmpty());
  const std::vector<std::string> known = ScenarioNames();
  for (const std::string& name : scenarios) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::fprintf(stderr, "dht_sim: unknown scenario %s\n", name.c_str());
      return false;
    }
  }
  return true;
}

int Main() {
  SimConfig config;
  std::vector<std::string> scenarios;
  if (!ConfigFromFlags(config, scenarios)) return 2;

  std::printf(
      "dht_sim nodes=%d latency_ms=%g loss=%g lookups=%d keys=%d "
      "providers_per_key=%d seed=%llu\n",
      config.nodes, absl::ToDoubleMilliseconds(config.latency), config.loss,
      config.lookups, config.keys, config.providers_per_key,
      static_cast<unsigned long long>(config.seed));
  std::vector<ScenarioResult> rows;
  for (const std::string& name : scenarios) {
    const absl::Time began = absl::Now();
    for (ScenarioResult& row : RunScenario(name, config)) {
      rows.push_back(std::move(row));
    }
    std::fprintf(stderr, "dht_sim: scenario=%s wall_s=%.1f\n", name.c_str(),
                 absl::ToDoubleSeconds(absl::Now() - began));
  }
  std::fputs(FormatTable(rows).c_str(), stdout);
  std::puts(
      "ms: simulated lookup latency; msgs/lkp: datagrams sent network-wide "
      "per lookup (requests + replies + pings); KiB/node: approximate RSS "
      "growth over building the network / nodes; dead prov: lookups that "
      "returned a killed provider");
  return 0;
}

}  // namespace
}  // namespace shoal::dht::sim

int main(int argc, char** argv) {
  gflags::SetUsageMessage("dht_sim [--nodes=1000] [--loss=0.01] ...");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  return shoal::dht::sim::Main();
}
