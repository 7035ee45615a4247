// Whole-network DHT scenarios over SimNetwork: build and bootstrap N nodes in
// one process, provide keys, disturb the network (kill, join, loss,
// partition) and measure FindProviders lookups. Shared by the dht_sim
// benchmark binary and scenarios_test. Single-threaded like SimNetwork: every
// call runs the simulated network until its callbacks have run.
#ifndef SHOAL_DHT_SIM_SCENARIOS_H_
#define SHOAL_DHT_SIM_SCENARIOS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "dht/endpoint.h"
#include "dht/node.h"
#include "dht/node_id.h"
#include "dht/sim/sim_network.h"

namespace shoal::dht::sim {

struct SimConfig {
  int nodes = 1000;
  // One-way latency of every link; 0.25 ms is a LAN hop.
  absl::Duration latency = absl::Microseconds(250);
  // Datagram loss probability for every scenario (loss1 forces 0.01).
  double loss = 0.01;
  int lookups = 1000;  // Per measured phase.
  int keys = 200;
  // Each key is provided by this many distinct random nodes, so kill10 can
  // kill 10% of the nodes without taking every provider of a key.
  int providers_per_key = 3;
  uint64_t seed = 1;
};

// One measured phase of a scenario: one table row.
struct ScenarioResult {
  std::string scenario;
  int nodes = 0;
  int lookups = 0;
  // Lookups that returned at least one provider of the key that is alive
  // (not killed) and on the looking node's side of a split.
  int succeeded = 0;
  // Lookups that returned at least one killed provider; -1 if the phase had
  // no killed nodes.
  int dead_provider_lookups = -1;
  std::vector<int> hops;           // Every lookup, found or not.
  std::vector<double> latency_ms;  // Every lookup, simulated time.
  uint64_t datagrams = 0;          // Sent network-wide during the phase.
  double rss_bytes_per_node = 0;   // Approximate, see SimCluster::Build.
  std::string goal;                // Empty: no goal for this phase.
  bool goal_met = true;
};

// N nodes on one SimNetwork, endpoints 10.0.x.y:4000 in creation order; the
// first kSeedCount nodes are the bootstrap seeds.
class SimCluster {
 public:
  // Bootstrap seeds; a handful, as a Kubernetes headless Service would list.
  static constexpr int kSeedCount = 5;

  explicit SimCluster(const SimConfig& config);
  ~SimCluster();
  SimCluster(const SimCluster&) = delete;
  SimCluster& operator=(const SimCluster&) = delete;

  // Creates config.nodes nodes and bootstraps them in batches. Records the
  // growth of the process RSS (/proc/self/statm) over that, per node:
  // approximate, as it includes allocator slack and whatever the allocator
  // had already freed is reused. Returns the number of failed bootstraps.
  int Build();
  // Adds `count` nodes and bootstraps them all at once; returns their
  // indices.
  std::vector<int> Join(int count);

  // config.keys keys, each provided by providers_per_key random nodes.
  // Returns the number of Provide calls that did not report OK.
  int ProvideKeys();

  // Cuts `fraction` of the nodes off (a partition between them and the
  // rest), never every provider of a key.
  std::vector<int> KillFraction(double fraction);
  // Splits the nodes into two random halves; Heal() undoes it.
  void SplitInHalves();
  // Removes every kill and split.
  void Heal();

  // Runs `count` FindProviders lookups of random provided keys from random
  // nodes in `from` (all live nodes if empty), started 1 ms apart, and
  // measures them.
  ScenarioResult MeasureLookups(const std::string& scenario, int count,
                                const std::vector<int>& from = {});

  // Synchronous helpers for tests.
  FindProvidersResult Find(int from, const NodeId& key);
  absl::Status Withdraw(int node, const std::vector<NodeId>& keys);

  SimNetwork& net() { return net_; }
  Node& node(int i) { return *nodes_[i]; }
  int size() const { return static_cast<int>(nodes_.size()); }
  const std::vector<NodeId>& keys() const { return keys_; }
  const std::vector<int>& providers(int key) const { return providers_[key]; }
  bool dead(int i) const { return dead_[i]; }
  int side(int i) const { return side_[i]; }
  static Endpoint EndpointOf(int i);
  double rss_bytes_per_node() const { return rss_bytes_per_node_; }

 private:
  // Runs the network until `done` holds or kRunLimit of simulated time has
  // passed. Not RunUntilIdle: nodes holding provider records check them on
  // a timer forever, so the network is never idle.
  void RunUntilDone(const std::function<bool()>& done);
  void AddNodes(int count);
  int BootstrapBatch(int first, int last);
  std::vector<int> LiveNodes() const;
  // Which node an endpoint belongs to, or -1.
  int IndexOf(const Endpoint& endpoint) const;

  const SimConfig config_;
  SimNetwork net_;
  std::mt19937_64 gen_;
  std::vector<std::unique_ptr<SimTransport>> transports_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<bool> dead_;
  std::vector<int> side_;  // 0 or 1 after SplitInHalves, else 0.
  std::vector<NodeId> keys_;
  std::vector<std::vector<int>> providers_;   // Per key, node indices.
  absl::flat_hash_map<Endpoint, int> index_;  // Inverse of EndpointOf.
  double rss_bytes_per_node_ = 0;
};

// The scenarios; each builds and bootstraps a fresh network from `config`
// and returns its rows. Names: steady, kill10, join10, loss1, partition.
std::vector<std::string> ScenarioNames();
std::vector<ScenarioResult> RunScenario(absl::string_view name,
                                        const SimConfig& config);

// Nearest-rank percentile (q in (0, 1]) of `values`; 0 when empty.
double Percentile(std::vector<double> values, double q);

// A fixed-width table: a header line, then one line per row.
std::string FormatTable(const std::vector<ScenarioResult>& rows);

}  // namespace shoal::dht::sim

#endif  // SHOAL_DHT_SIM_SCENARIOS_H_
