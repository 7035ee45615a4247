#include "dht/sim/scenarios.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/optional.h"
#include "glog/logging.h"

namespace shoal::dht::sim {
namespace {

// Nodes bootstrapping at once in Build(); each batch then runs until the
// network is idle, so the simulated clock advances between batches.
constexpr int kBootstrapBatch = 50;
// Lookups start this far apart in simulated time: a lookup takes a few
// round trips (~1-2 ms), so they overlap little and do not queue.
constexpr absl::Duration kLookupSpacing = absl::Milliseconds(1);
// RunUntilDone gives up after this much simulated time; every operation
// here ends within a few hard timeouts (0.3 s) of its last request.
constexpr absl::Duration kRunLimit = absl::Minutes(5);
// RunUntilDone's step: 1 ms is two LAN round trips, so a phase ends within
// 1 ms of its last callback.
constexpr absl::Duration kRunStep = absl::Milliseconds(1);
// kill10 looks up again this long after the kill.
constexpr absl::Duration kAfterKill = absl::Seconds(30);

// Resident set size of this process from /proc/self/statm, in bytes; 0 if
// unreadable.
double RssBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long size_pages = 0, resident_pages = 0;
  const int read = std::fscanf(f, "%ld %ld", &size_pages, &resident_pages);
  std::fclose(f);
  if (read != 2) return 0;
  return static_cast<double>(resident_pages) * sysconf(_SC_PAGESIZE);
}

std::string GoalText(double success_floor, bool latency, bool no_dead) {
  std::string goal = absl::StrFormat("success>=%g%%", success_floor * 100);
  if (latency) absl::StrAppend(&goal, " p50<=2ms p99<=20ms");
  if (no_dead) absl::StrAppend(&goal, " dead=0");
  return goal;
}

// Fills goal and goal_met from the figures of `row`.
void SetGoal(ScenarioResult& row, double success_floor, bool latency,
             bool no_dead) {
  row.goal = GoalText(success_floor, latency, no_dead);
  const double success =
      row.lookups == 0 ? 0 : static_cast<double>(row.succeeded) / row.lookups;
  row.goal_met = success >= success_floor;
  if (latency) {
    row.goal_met = row.goal_met && Percentile(row.latency_ms, 0.5) <= 2 &&
                   Percentile(row.latency_ms, 0.99) <= 20;
  }
  if (no_dead) row.goal_met = row.goal_met && row.dead_provider_lookups == 0;
}

// A fresh network for one scenario: built, bootstrapped, keys provided.
std::unique_ptr<SimCluster> BuildCluster(const SimConfig& config) {
  auto cluster = std::make_unique<SimCluster>(config);
  const int failed_bootstraps = cluster->Build();
  const int failed_provides = cluster->ProvideKeys();
  LOG_IF(WARNING, failed_bootstraps > 0 || failed_provides > 0)
      << "dht_sim: setup incomplete failed_bootstraps=" << failed_bootstraps
      << " failed_provides=" << failed_provides;
  return cluster;
}

ScenarioResult Tag(ScenarioResult row, const SimCluster& cluster) {
  row.rss_bytes_per_node = cluster.rss_bytes_per_node();
  return row;
}

// TODO: at 5,000 nodes about 1% of lookups end with no provider (steady
// 99.0%, goal 99.9%); not investigated, so success there is not assured.
std::vector<ScenarioResult> RunSteady(const SimConfig& config,
                                      const std::string& name) {
  std::unique_ptr<SimCluster> cluster = BuildCluster(config);
  ScenarioResult row =
      Tag(cluster->MeasureLookups(name, config.lookups), *cluster);
  SetGoal(row, 0.999, /*latency=*/true, /*no_dead=*/false);
  return {row};
}

// Sum of one node counter over all nodes.
uint64_t SumProviderPings(SimCluster& cluster) {
  uint64_t pings = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    pings += cluster.node(i).counters().provider_pings;
  }
  return pings;
}

std::vector<ScenarioResult> RunKill10(const SimConfig& config) {
  std::unique_ptr<SimCluster> cluster = BuildCluster(config);
  cluster->KillFraction(0.10);
  const absl::Time killed_at = cluster->net().Now();
  ScenarioResult now =
      Tag(cluster->MeasureLookups("kill10+0s", config.lookups), *cluster);
  SetGoal(now, 0.99, /*latency=*/false, /*no_dead=*/false);

  const uint64_t pings_before = SumProviderPings(*cluster);
  const absl::Time wait_from = cluster->net().Now();
  cluster->net().RunUntil(killed_at + kAfterKill);
  // The provider checks' cost, for the README (all nodes, killed included).
  LOG(INFO) << "dht_sim: provider checks nodes=" << cluster->size()
            << " pings_per_node_per_s="
            << (SumProviderPings(*cluster) - pings_before) /
                   static_cast<double>(cluster->size()) /
                   absl::ToDoubleSeconds(cluster->net().Now() - wait_from);
  ScenarioResult later =
      Tag(cluster->MeasureLookups("kill10+30s", config.lookups), *cluster);
  SetGoal(later, 0.99, /*latency=*/false, /*no_dead=*/true);
  return {now, later};
}

std::vector<ScenarioResult> RunJoin10(const SimConfig& config) {
  std::unique_ptr<SimCluster> cluster = BuildCluster(config);
  std::vector<int> joined = cluster->Join(std::max(1, config.nodes / 10));
  ScenarioResult row =
      Tag(cluster->MeasureLookups("join10", config.lookups, joined), *cluster);
  SetGoal(row, 0.999, /*latency=*/false, /*no_dead=*/false);
  return {row};
}

std::vector<ScenarioResult> RunPartition(const SimConfig& config) {
  std::unique_ptr<SimCluster> cluster = BuildCluster(config);
  cluster->SplitInHalves();
  // No goal while split: a lookup succeeds only if the records and a
  // provider happen to be reachable from its half.
  ScenarioResult split =
      Tag(cluster->MeasureLookups("partition", config.lookups), *cluster);
  cluster->Heal();
  ScenarioResult healed =
      Tag(cluster->MeasureLookups("healed", config.lookups), *cluster);
  SetGoal(healed, 0.999, /*latency=*/false, /*no_dead=*/false);
  return {split, healed};
}

}  // namespace

SimCluster::SimCluster(const SimConfig& config)
    : config_(config),
      net_(SimNetworkOptions{config.seed, config.latency, config.loss}),
      gen_(config.seed) {}

SimCluster::~SimCluster() {
  // Nodes before their transports, transports before the network.
  nodes_.clear();
  transports_.clear();
}

Endpoint SimCluster::EndpointOf(int i) {
  return *Endpoint::Parse(absl::StrCat("10.", i / 62500, ".", i / 250 % 250,
                                       ".", i % 250 + 1, ":4000"));
}

void SimCluster::AddNodes(int count) {
  for (int n = 0; n < count; ++n) {
    const int i = size();
    index_[EndpointOf(i)] = i;
    transports_.push_back(net_.Attach(EndpointOf(i)));
    nodes_.push_back(std::make_unique<Node>(
        NodeId::Random(gen_), *transports_.back(), net_.clock(), gen_));
    dead_.push_back(false);
    side_.push_back(0);
  }
}

void SimCluster::RunUntilDone(const std::function<bool()>& done) {
  const absl::Time limit = net_.Now() + kRunLimit;
  while (!done() && net_.Now() < limit) net_.RunFor(kRunStep);
}

int SimCluster::BootstrapBatch(int first, int last) {
  std::vector<Endpoint> seeds;
  for (int s = 0; s < std::min(kSeedCount, first); ++s) {
    seeds.push_back(EndpointOf(s));
  }
  int failed = 0, finished = 0;
  for (int i = first; i < last; ++i) {
    nodes_[i]->Bootstrap(seeds, [&failed, &finished](absl::Status status) {
      if (!status.ok()) ++failed;
      ++finished;
    });
  }
  RunUntilDone([&] { return finished == last - first; });
  // The callbacks point into this frame.
  CHECK_EQ(finished, last - first) << "bootstraps did not all call back";
  return failed;
}

int SimCluster::Build() {
  malloc_trim(0);  // Return earlier scenarios' memory, for a fairer baseline.
  const double rss_before = RssBytes();
  AddNodes(config_.nodes);

  // The seeds join one by one from node 0, then everyone else in batches.
  int failed = 0;
  const int seeds = std::min(kSeedCount, size());
  for (int i = 1; i < seeds; ++i) failed += BootstrapBatch(i, i + 1);
  for (int i = seeds; i < size(); i += kBootstrapBatch) {
    failed += BootstrapBatch(i, std::min(size(), i + kBootstrapBatch));
  }
  rss_bytes_per_node_ = (RssBytes() - rss_before) / std::max(1, size());
  return failed;
}

std::vector<int> SimCluster::Join(int count) {
  const int first = size();
  AddNodes(count);
  // All at once, unlike Build(): the seeds take the whole burst.
  BootstrapBatch(first, size());
  std::vector<int> joined;
  for (int i = first; i < size(); ++i) joined.push_back(i);
  return joined;
}

int SimCluster::ProvideKeys() {
  keys_.clear();
  providers_.clear();
  absl::flat_hash_map<int, std::vector<NodeId>> per_node;
  const int per_key = std::min(config_.providers_per_key, size());
  for (int k = 0; k < config_.keys; ++k) {
    keys_.push_back(
        NodeId::ForKey(absl::StrCat("sha256:sim-", config_.seed, "-", k)));
    std::vector<int> chosen;
    while (static_cast<int>(chosen.size()) < per_key) {
      const int n = std::uniform_int_distribution<int>(0, size() - 1)(gen_);
      if (std::find(chosen.begin(), chosen.end(), n) != chosen.end()) continue;
      chosen.push_back(n);
      per_node[n].push_back(keys_.back());
    }
    providers_.push_back(std::move(chosen));
  }

  // One Provide per node, in index order so runs are deterministic.
  std::vector<int> order;
  for (const auto& entry : per_node) order.push_back(entry.first);
  std::sort(order.begin(), order.end());
  int failed = 0, finished = 0;
  for (int n : order) {
    nodes_[n]->Provide(per_node[n], [&failed, &finished](absl::Status status) {
      if (!status.ok()) ++failed;
      ++finished;
    });
  }
  const int started = static_cast<int>(order.size());
  RunUntilDone([&] { return finished == started; });
  CHECK_EQ(finished, started) << "provides did not all call back";
  return failed;
}

std::vector<int> SimCluster::KillFraction(double fraction) {
  const int target = static_cast<int>(std::lround(size() * fraction));
  // Live providers left per key; a node is spared if killing it would leave
  // a key with none.
  std::vector<int> live_providers(keys_.size());
  absl::flat_hash_map<int, std::vector<int>> keys_of;
  for (size_t k = 0; k < keys_.size(); ++k) {
    live_providers[k] = static_cast<int>(providers_[k].size());
    for (int n : providers_[k]) keys_of[n].push_back(static_cast<int>(k));
  }
  std::vector<int> order(size());
  for (int i = 0; i < size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), gen_);

  std::vector<int> killed;
  for (int n : order) {
    if (static_cast<int>(killed.size()) >= target) break;
    const std::vector<int>& provided = keys_of[n];
    if (std::any_of(provided.begin(), provided.end(),
                    [&](int k) { return live_providers[k] <= 1; })) {
      continue;
    }
    for (int k : provided) --live_providers[k];
    dead_[n] = true;
    net_.SetGroup(EndpointOf(n), 1);
    killed.push_back(n);
  }
  // TODO: killed nodes are only cut off from the rest (group 1), not
  // destroyed: they still talk among themselves, which costs simulation
  // time but changes nothing the live nodes see.
  return killed;
}

void SimCluster::SplitInHalves() {
  std::vector<int> order(size());
  for (int i = 0; i < size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), gen_);
  for (int j = 0; j < size() / 2; ++j) {
    side_[order[j]] = 1;
    net_.SetGroup(EndpointOf(order[j]), 1);
  }
}

void SimCluster::Heal() {
  net_.Heal();
  std::fill(side_.begin(), side_.end(), 0);
  std::fill(dead_.begin(), dead_.end(), false);
}

std::vector<int> SimCluster::LiveNodes() const {
  std::vector<int> live;
  for (int i = 0; i < size(); ++i) {
    if (!dead_[i]) live.push_back(i);
  }
  return live;
}

int SimCluster::IndexOf(const Endpoint& endpoint) const {
  auto it = index_.find(endpoint);
  return it == index_.end() ? -1 : it->second;
}

// Latency is measured to the FindProviders callback, which comes with the
// first provider found (NodeOptions::enough_providers, default 1).
ScenarioResult SimCluster::MeasureLookups(const std::string& scenario,
                                          int count,
                                          const std::vector<int>& from) {
  ScenarioResult row;
  row.scenario = scenario;
  row.nodes = size();
  row.lookups = count;
  if (std::any_of(dead_.begin(), dead_.end(), [](bool d) { return d; })) {
    row.dead_provider_lookups = 0;
  }
  const std::vector<int> sources = from.empty() ? LiveNodes() : from;
  if (sources.empty() || keys_.empty()) return row;

  const uint64_t sent_before = net_.counters().sent;
  for (int l = 0; l < count; ++l) {
    const int n = sources[std::uniform_int_distribution<size_t>(
        0, sources.size() - 1)(gen_)];
    const int k =
        std::uniform_int_distribution<size_t>(0, keys_.size() - 1)(gen_);
    net_.clock().Schedule(l * kLookupSpacing, [this, &row, n, k] {
      const absl::Time begun = net_.Now();
      nodes_[n]->FindProviders(
          keys_[k], [this, &row, n, k, begun](FindProvidersResult result) {
            bool live = false, dead = false;
            for (const Endpoint& ep : result.providers) {
              const int p = IndexOf(ep);
              // Endpoints that never provided the key (none expected) count
              // as neither.
              const std::vector<int>& owners = providers_[k];
              if (std::find(owners.begin(), owners.end(), p) == owners.end()) {
                continue;
              }
              // A provider in the other half of a split is unreachable.
              if (dead_[p]) {
                dead = true;
              } else if (side_[p] == side_[n]) {
                live = true;
              }
            }
            row.succeeded += live;
            if (dead && row.dead_provider_lookups >= 0) {
              ++row.dead_provider_lookups;
            }
            row.hops.push_back(result.hops);
            row.latency_ms.push_back(
                absl::ToDoubleMilliseconds(net_.Now() - begun));
          });
    });
  }
  RunUntilDone([&] { return row.hops.size() == static_cast<size_t>(count); });
  CHECK_EQ(row.hops.size(), static_cast<size_t>(count))
      << "lookups did not all call back";
  row.datagrams = net_.counters().sent - sent_before;
  return row;
}

FindProvidersResult SimCluster::Find(int from, const NodeId& key) {
  absl::optional<FindProvidersResult> found;
  nodes_[from]->FindProviders(key,
                              [&found](FindProvidersResult r) { found = r; });
  RunUntilDone([&] { return found.has_value(); });
  CHECK(found.has_value()) << "FindProviders did not call back";
  return *found;
}

absl::Status SimCluster::Withdraw(int node, const std::vector<NodeId>& keys) {
  absl::optional<absl::Status> status;
  nodes_[node]->Withdraw(keys, [&status](absl::Status s) { status = s; });
  RunUntilDone([&] { return status.has_value(); });
  CHECK(status.has_value()) << "Withdraw did not call back";
  return *status;
}

std::vector<std::string> ScenarioNames() {
  return {"steady", "kill10", "join10", "loss1", "partition"};
}

std::vector<ScenarioResult> RunScenario(absl::string_view name,
                                        const SimConfig& config) {
  if (name == "steady") return RunSteady(config, "steady");
  if (name == "kill10") return RunKill10(config);
  if (name == "join10") return RunJoin10(config);
  if (name == "loss1") {
    SimConfig lossy = config;
    lossy.loss = 0.01;
    return RunSteady(lossy, "loss1");
  }
  if (name == "partition") return RunPartition(config);
  LOG(FATAL) << "dht_sim: unknown scenario name=" << name;
  return {};
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * values.size()));
  return values[std::max<size_t>(rank, 1) - 1];
}

std::string FormatTable(const std::vector<ScenarioResult>& rows) {
  std::string out = absl::StrFormat(
      "| %5s | %-10s | %7s | %8s | %9s | %13s | %9s | %8s | %9s | %s |\n",
      "nodes", "scenario", "lookups", "success", "hops p50/p99", "ms p50/p99",
      "msgs/lkp", "KiB/node", "dead prov", "goal (issue)");
  for (const ScenarioResult& row : rows) {
    std::vector<double> hops(row.hops.begin(), row.hops.end());
    const double success =
        row.lookups == 0 ? 0 : 100.0 * row.succeeded / row.lookups;
    const std::string dead = row.dead_provider_lookups < 0
                                 ? "-"
                                 : absl::StrCat(row.dead_provider_lookups);
    const std::string goal =
        row.goal.empty()
            ? "-"
            : absl::StrCat(row.goal, row.goal_met ? ": met" : ": MISSED");
    absl::StrAppendFormat(
        &out,
        "| %5d | %-10s | %7d | %7.2f%% | %5.0f/%-6.0f | %6.2f/%-6.2f | %9.1f "
        "| %8.1f | %9s | %s |\n",
        row.nodes, row.scenario, row.lookups, success, Percentile(hops, 0.5),
        Percentile(hops, 0.99), Percentile(row.latency_ms, 0.5),
        Percentile(row.latency_ms, 0.99),
        row.lookups == 0 ? 0.0
                         : static_cast<double>(row.datagrams) / row.lookups,
        row.rss_bytes_per_node / 1024, dead, goal);
  }
  return out;
}

}  // namespace shoal::dht::sim
