// Provider records: which nodes hold the blob behind each 32-byte key, as
// announced by ADD_PROVIDER and removed by WITHDRAW_PROVIDER (see README.md).
// Owned by the DHT node and used only on its event-loop thread: not
// thread-safe, takes no locks. Time is passed in; there is no clock inside.
#ifndef SHOAL_DHT_PROVIDER_STORE_H_
#define SHOAL_DHT_PROVIDER_STORE_H_

#include <cstddef>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dht/codec.h"
#include "dht/endpoint.h"
#include "dht/node_id.h"

namespace shoal::dht {

struct ProviderStoreOptions {
  // Providers kept per key. A PROVIDERS reply carries at most 20
  // (kMaxProviders); 50 is two and a half replies, so a popular base layer
  // still has 20 live providers to hand out after a churn of 30, while one
  // key cannot take more than 50 of the store's records.
  size_t max_providers_per_key = 50;
  // Records kept in total. A node with D digests advertises each to the k
  // nodes closest to its key, so each of N nodes stores D * k / N of its
  // records; if all N nodes provide D distinct digests that is D * k per node
  // whatever N is: 10,000 * 20 = 200,000. Nodes of one cluster pull the same
  // images, so real keys overlap heavily (and the per-key cap bites); 250,000
  // leaves 25% for a node whose share of the key space is above average. A
  // record costs about 100 bytes, so the store stays under ~25 MB.
  size_t max_records = 250000;
  // Longest lifetime granted; longer requests are shortened to it. The wire
  // limit (kMaxProviderTtl, 48 h) bounds how long a vanished node's records
  // linger; a node may choose less.
  absl::Duration max_ttl = kMaxProviderTtl;
};

// One provider of one key.
struct ProviderRecord {
  NodeId provider_id;    // The node that announced it (envelope sender).
  Endpoint endpoint;     // Where peers fetch the blob from.
  absl::Time refreshed;  // Last Add() for this (key, provider).
  absl::Time expires;    // Live while now < expires.
};

enum class AddProviderResult {
  kAdded,      // A new (key, provider) record.
  kRefreshed,  // Existing record: endpoint, refreshed and expiry replaced.
};

// Records are keyed by (key, provider ID), as on the wire: a provider has at
// most one record per key, and a refresh replaces it. A record is live while
// now < expires; at exactly `expires` it is gone. Expired records are hidden
// from Get() at once but only freed by Add() on the same key or by
// ExpireAll(), which the owner should run periodically (every minute keeps
// the overshoot to a minute's worth of expiries).
class ProviderStore {
 public:
  explicit ProviderStore(ProviderStoreOptions options = {});

  // Adds or refreshes the record of `provider_id` for `key`, live until
  // now + ttl (ttl shortened to options.max_ttl). INVALID_ARGUMENT if ttl is
  // not positive. RESOURCE_EXHAUSTED if the record is new and the key already
  // has max_providers_per_key live providers or the store holds max_records;
  // refreshes always succeed. Expired records of `key` are freed first.
  // TODO: a full key or store refuses newcomers rather than evicting
  // incumbents, so with unauthenticated senders a flood of fake providers can
  // lock a key (or the store) for up to max_ttl; evicting at random among
  // the least recently refreshed would bound that.
  absl::StatusOr<AddProviderResult> Add(const NodeId& key,
                                        const NodeId& provider_id,
                                        const Endpoint& endpoint,
                                        absl::Duration ttl, absl::Time now);

  // Removes the record of `provider_id` for `key` (WITHDRAW_PROVIDER).
  // Returns true if there was one, expired or not.
  bool Withdraw(const NodeId& key, const NodeId& provider_id);

  // Removes every record of `provider_id`, e.g. once the routing table has
  // found the node dead. Returns the number removed. Scans all records:
  // about a millisecond at max_records, and nodes die rarely, so an index
  // by provider would cost more memory than it saves time.
  size_t RemoveProvider(const NodeId& provider_id);

  // Up to `max` live records of `key`, most recently refreshed first (ties:
  // later expiry first, then by provider ID, so the order is deterministic).
  std::vector<ProviderRecord> Get(const NodeId& key, absl::Time now,
                                  size_t max = kMaxProviders) const;

  // Frees every record expired at `now`. Returns the number freed.
  size_t ExpireAll(absl::Time now);

  // Records of `provider_id` held, including expired ones not yet freed.
  size_t RecordsOf(const NodeId& provider_id) const;

  // Records held, including expired ones not yet freed.
  size_t size() const { return size_; }
  // Keys with at least one record held.
  size_t key_count() const { return by_key_.size(); }

 private:
  size_t ExpireKey(std::vector<ProviderRecord>& records, absl::Time now);
  // Lowers the record count of `provider_id` by one, erasing it at zero.
  void Uncount(const NodeId& provider_id);

  // Set at construction.
  const ProviderStoreOptions options_;

  // A key's records, unordered; at most max_providers_per_key, so a linear
  // scan is cheap. Keys with no records are erased.
  absl::flat_hash_map<NodeId, std::vector<ProviderRecord>> by_key_;
  size_t size_ = 0;
  // Records held per provider ID, so the node can tell when it no longer
  // holds any record of a provider it checks; the IDs with a nonzero count.
  absl::flat_hash_map<NodeId, size_t> per_provider_;
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_PROVIDER_STORE_H_
