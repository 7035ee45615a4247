// Runs the DHT scenarios of scenarios.h over SimNetwork in one process and
// prints one table row per measured phase. Deterministic from --seed; all
// times are simulated. Example:
//   bazel run //dht/sim:dht_sim -- --nodes=1000 --seed=1
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dht/sim/scenarios.h"
#include "glog/logging.h"

namespace shoal::dht::sim {
namespace {

constexpr char kUsage[] =
    "usage: dht_sim [--nodes=1000] [--latency_ms=0.25] [--loss=0.01]\n"
    "  [--lookups=1000] [--keys=200] [--seed=1]\n"
    "  [--scenarios=steady,kill10,join10,loss1,partition]\n";

// Parses --name=value flags into `config` and `scenarios`. Returns false on
// an unknown flag or a bad value.
// TODO: flags are parsed by hand because //third_party/absl does not link
// absl_flags; --help and flag files are not supported.
bool ParseFlags(int argc, char** argv, SimConfig& config,
                std::vector<std::string>& scenarios) {
  for (int i = 1; i < argc; ++i) {
    std::vector<std::string> parts =
        absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    if (parts.size() != 2) return false;
    const std::string& name = parts[0];
    const std::string& value = parts[1];
    double latency_ms = 0;
    bool ok = true;
    if (name == "--nodes") {
      ok = absl::SimpleAtoi(value, &config.nodes) && config.nodes > 0;
    } else if (name == "--latency_ms") {
      ok = absl::SimpleAtod(value, &latency_ms) && latency_ms >= 0;
      config.latency = absl::Microseconds(latency_ms * 1000);
    } else if (name == "--loss") {
      ok = absl::SimpleAtod(value, &config.loss) && config.loss >= 0 &&
           config.loss <= 1;
    } else if (name == "--lookups") {
      ok = absl::SimpleAtoi(value, &config.lookups) && config.lookups >= 0;
    } else if (name == "--keys") {
      ok = absl::SimpleAtoi(value, &config.keys) && config.keys > 0;
    } else if (name == "--seed") {
      ok = absl::SimpleAtoi(value, &config.seed);
    } else if (name == "--scenarios") {
      scenarios = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else {
      ok = false;
    }
    if (!ok) return false;
  }
  return true;
}

int Main(int argc, char** argv) {
  SimConfig config;
  std::vector<std::string> scenarios = ScenarioNames();
  if (!ParseFlags(argc, argv, config, scenarios)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  for (const std::string& name : scenarios) {
    const std::vector<std::string> known = ScenarioNames();
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::fprintf(stderr, "unknown scenario %s\n%s", name.c_str(), kUsage);
      return 2;
    }
  }

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
  google::InitGoogleLogging(argv[0]);
  return shoal::dht::sim::Main(argc, argv);
}
