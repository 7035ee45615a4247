#include "dht/provider_store.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace shoal::dht {
namespace {

bool FresherThan(const ProviderRecord& a, const ProviderRecord& b) {
  if (a.refreshed != b.refreshed) return a.refreshed > b.refreshed;
  if (a.expires != b.expires) return a.expires > b.expires;
  return a.provider_id < b.provider_id;
}

}  // namespace

ProviderStore::ProviderStore(ProviderStoreOptions options) : options_(options) {
  CHECK_GT(options_.max_providers_per_key, 0u);
  CHECK_GT(options_.max_records, 0u);
  CHECK_GT(options_.max_ttl, absl::ZeroDuration());
}

size_t ProviderStore::ExpireKey(std::vector<ProviderRecord>& records,
                                absl::Time now) {
  auto live_end =
      std::partition(records.begin(), records.end(),
                     [&](const ProviderRecord& r) { return r.expires > now; });
  for (auto it = live_end; it != records.end(); ++it) Uncount(it->provider_id);
  size_t freed = records.end() - live_end;
  records.erase(live_end, records.end());
  size_ -= freed;
  return freed;
}

absl::StatusOr<AddProviderResult> ProviderStore::Add(const NodeId& key,
                                                     const NodeId& provider_id,
                                                     const Endpoint& endpoint,
                                                     absl::Duration ttl,
                                                     absl::Time now) {
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("provider ttl must be positive, got ",
                     absl::FormatDuration(ttl), " key=", key.ShortHex()));
  }
  ProviderRecord fresh{provider_id, endpoint, now,
                       now + std::min(ttl, options_.max_ttl)};

  std::vector<ProviderRecord>& records = by_key_[key];
  ExpireKey(records, now);
  auto it = std::find_if(
      records.begin(), records.end(),
      [&](const ProviderRecord& r) { return r.provider_id == provider_id; });
  if (it != records.end()) {
    *it = fresh;
    return AddProviderResult::kRefreshed;
  }

  if (records.size() >= options_.max_providers_per_key ||
      size_ >= options_.max_records) {
    bool key_full = records.size() >= options_.max_providers_per_key;
    if (records.empty()) by_key_.erase(key);
    return absl::ResourceExhaustedError(absl::StrCat(
        key_full ? "key has " : "store has ", key_full ? records.size() : size_,
        " provider records, the limit; key=", key.ShortHex()));
  }
  records.push_back(fresh);
  ++size_;
  ++per_provider_[provider_id];
  return AddProviderResult::kAdded;
}

bool ProviderStore::Withdraw(const NodeId& key, const NodeId& provider_id) {
  auto entry = by_key_.find(key);
  if (entry == by_key_.end()) return false;
  std::vector<ProviderRecord>& records = entry->second;
  auto it = std::find_if(
      records.begin(), records.end(),
      [&](const ProviderRecord& r) { return r.provider_id == provider_id; });
  if (it == records.end()) return false;

  records.erase(it);
  --size_;
  Uncount(provider_id);
  if (records.empty()) by_key_.erase(entry);
  return true;
}

size_t ProviderStore::RemoveProvider(const NodeId& provider_id) {
  size_t removed = 0;
  for (auto entry = by_key_.begin(); entry != by_key_.end();) {
    std::vector<ProviderRecord>& records = entry->second;
    auto end = std::remove_if(
        records.begin(), records.end(),
        [&](const ProviderRecord& r) { return r.provider_id == provider_id; });
    removed += records.end() - end;
    records.erase(end, records.end());
    // erase() on a flat_hash_map invalidates only the erased iterator.
    if (records.empty()) {
      by_key_.erase(entry++);
    } else {
      ++entry;
    }
  }
  size_ -= removed;
  per_provider_.erase(provider_id);
  return removed;
}

void ProviderStore::Uncount(const NodeId& provider_id) {
  auto it = per_provider_.find(provider_id);
  DCHECK(it != per_provider_.end());
  if (it != per_provider_.end() && --it->second == 0) per_provider_.erase(it);
}

size_t ProviderStore::RecordsOf(const NodeId& provider_id) const {
  auto it = per_provider_.find(provider_id);
  return it == per_provider_.end() ? 0 : it->second;
}

std::vector<ProviderRecord> ProviderStore::Get(const NodeId& key,
                                               absl::Time now,
                                               size_t max) const {
  std::vector<ProviderRecord> live;
  auto entry = by_key_.find(key);
  if (entry == by_key_.end()) return live;
  for (const ProviderRecord& r : entry->second) {
    if (now < r.expires) live.push_back(r);
  }

  max = std::min(max, live.size());
  std::partial_sort(live.begin(), live.begin() + max, live.end(), FresherThan);
  live.resize(max);
  return live;
}

size_t ProviderStore::ExpireAll(absl::Time now) {
  size_t freed = 0;
  for (auto entry = by_key_.begin(); entry != by_key_.end();) {
    freed += ExpireKey(entry->second, now);
    if (entry->second.empty()) {
      by_key_.erase(entry++);
    } else {
      ++entry;
    }
  }
  return freed;
}

}  // namespace shoal::dht
