#include "dht/routing_table.h"

#include <algorithm>
#include <iterator>

#include "glog/logging.h"

namespace shoal::dht {
namespace {

template <typename Entries>
auto FindById(Entries& entries, const NodeId& id) {
  return std::find_if(entries.begin(), entries.end(),
                      [&](const auto& e) { return e.contact.id == id; });
}

}  // namespace

RoutingTable::RoutingTable(const NodeId& self, RoutingTableOptions options)
    : self_(self), options_(options) {
  CHECK_GT(options_.bucket_size, 0u);
  CHECK_GT(options_.max_failures, 0);
}

RoutingTable::Bucket& RoutingTable::BucketFor(const NodeId& id) {
  return buckets_[BucketIndex(self_, id)];
}

ObserveOutcome RoutingTable::Observe(const Contact& contact, absl::Time now) {
  if (contact.id == self_) return {ObserveResult::kSelf, absl::nullopt};
  Bucket& bucket = BucketFor(contact.id);

  auto it = FindById(bucket.live, contact.id);
  if (it != bucket.live.end()) {
    // TODO: a known ID seen at a new endpoint is ignored, which resists
    // hijacking by spoofed datagrams but keeps a node that changed address
    // unreachable until it fails max_failures requests and is replaced.
    if (it->contact.endpoint != contact.endpoint) {
      return {ObserveResult::kEndpointConflict, absl::nullopt};
    }
    Entry entry = *it;
    entry.last_seen = now;
    entry.failures = 0;
    entry.ping_pending = false;
    bucket.live.erase(it);
    bucket.live.push_back(entry);
    return {ObserveResult::kRefreshed, absl::nullopt};
  }

  if (bucket.live.size() < options_.bucket_size) {
    auto stale = FindById(bucket.replacements, contact.id);
    if (stale != bucket.replacements.end()) bucket.replacements.erase(stale);
    bucket.live.push_back(Entry{contact, now});
    ++size_;
    return {ObserveResult::kAdded, absl::nullopt};
  }
  return AddToFullBucket(bucket, contact, now);
}

ObserveOutcome RoutingTable::AddToFullBucket(Bucket& bucket,
                                             const Contact& contact,
                                             absl::Time now) {
  auto old = FindById(bucket.replacements, contact.id);
  if (old != bucket.replacements.end()) bucket.replacements.erase(old);
  bucket.replacements.push_back(Entry{contact, now});
  if (bucket.replacements.size() > options_.replacement_cache_size) {
    bucket.replacements.erase(bucket.replacements.begin());
  }

  Entry& oldest = bucket.live.front();
  if (oldest.ping_pending) return {ObserveResult::kBucketFull, absl::nullopt};
  oldest.ping_pending = true;
  return {ObserveResult::kBucketFull, oldest.contact};
}

bool RoutingTable::RecordFailure(const NodeId& id) {
  if (id == self_) return false;
  Bucket& bucket = BucketFor(id);

  auto it = FindById(bucket.live, id);
  if (it == bucket.live.end()) {
    // A replacement that fails is not worth promoting later.
    auto r = FindById(bucket.replacements, id);
    if (r != bucket.replacements.end()) bucket.replacements.erase(r);
    return false;
  }
  ++it->failures;
  if (!it->ping_pending && it->failures < options_.max_failures) return false;
  RemoveAndPromote(bucket, it - bucket.live.begin());
  return true;
}

void RoutingTable::RemoveAndPromote(Bucket& bucket, size_t live_index) {
  bucket.live.erase(bucket.live.begin() + live_index);
  --size_;
  if (bucket.replacements.empty()) return;

  // Keep `live` ordered by last_seen: the promoted contact may have been
  // seen before some live ones.
  Entry promoted = bucket.replacements.back();
  bucket.replacements.pop_back();
  auto pos = std::upper_bound(
      bucket.live.begin(), bucket.live.end(), promoted.last_seen,
      [](absl::Time t, const Entry& e) { return t < e.last_seen; });
  bucket.live.insert(pos, promoted);
  ++size_;
}

std::vector<Contact> RoutingTable::FindClosest(const NodeId& target,
                                               size_t n) const {
  // A full scan: the table holds a few hundred contacts in practice
  // (k * log2(network size)), so sorting them is cheaper than being clever.
  std::vector<Contact> all;
  all.reserve(size_);
  for (const Bucket& bucket : buckets_) {
    for (const Entry& e : bucket.live) all.push_back(e.contact);
  }
  n = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + n, all.end(),
                    [&](const Contact& a, const Contact& b) {
                      return CloserTo(target, a.id, b.id);
                    });
  all.resize(n);
  return all;
}

bool RoutingTable::Contains(const NodeId& id) const {
  if (id == self_) return false;
  const Bucket& bucket = buckets_[BucketIndex(self_, id)];
  return FindById(bucket.live, id) != bucket.live.end();
}

size_t RoutingTable::size() const { return size_; }

std::vector<Contact> RoutingTable::BucketContacts(int index) const {
  CHECK(index >= 0 && index < kNumBuckets) << "bucket " << index;
  std::vector<Contact> out;
  for (const Entry& e : buckets_[index].live) out.push_back(e.contact);
  return out;
}

std::vector<Contact> RoutingTable::ReplacementContacts(int index) const {
  CHECK(index >= 0 && index < kNumBuckets) << "bucket " << index;
  std::vector<Contact> out;
  const auto& r = buckets_[index].replacements;
  for (auto it = r.rbegin(); it != r.rend(); ++it) out.push_back(it->contact);
  return out;
}

}  // namespace shoal::dht
