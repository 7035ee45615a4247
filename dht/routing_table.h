// Kademlia k-buckets for one node ID (Maymounkov & Mazieres, section 2.2).
// Owned by the DHT node and used only on its event-loop thread: not
// thread-safe, takes no locks. Time is passed in; there is no clock inside.
#ifndef SHOAL_DHT_ROUTING_TABLE_H_
#define SHOAL_DHT_ROUTING_TABLE_H_

#include <array>
#include <cstddef>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "dht/endpoint.h"
#include "dht/node_id.h"

namespace shoal::dht {

struct RoutingTableOptions {
  // Bucket size k. 20 is the paper's choice (section 2.2): the chance that
  // all 20 contacts of a bucket leave within an hour is negligible.
  size_t bucket_size = 20;
  // Newcomers kept per full bucket, most recently seen first out. Matching k
  // refills a bucket even if all its contacts die at once (paper, 4.1).
  size_t replacement_cache_size = 20;
  // Consecutive failed requests after which a contact is removed. With
  // independent UDP loss of 1-5%, three losses in a row happen to a live node
  // 1e-6..1e-4 of the time, while a dead node is gone after three timeouts
  // (a few lookups). One would drop live nodes on every lost datagram.
  int max_failures = 3;
};

// What Observe() did with a contact.
enum class ObserveResult {
  kAdded,             // Stored at the tail of a bucket with room.
  kRefreshed,         // Already stored: moved to the tail, failures reset.
  kBucketFull,        // Bucket full: newcomer kept in the replacement cache.
  kEndpointConflict,  // Known ID at another endpoint: ignored.
  kSelf,              // Our own ID: never stored.
};

struct ObserveOutcome {
  ObserveResult result;
  // With kBucketFull: the bucket's least-recently-seen contact, which the
  // caller must ping and then report with Observe() (answered) or
  // RecordFailure() (timed out). Empty if a ping is already outstanding.
  absl::optional<Contact> ping_candidate;
};

// Contacts are filed by BucketIndex(self, id): bucket i holds IDs at XOR
// distance [2^i, 2^(i+1)). Using all 256 buckets up front equals the paper's
// fully split tree.
// TODO: buckets far from our own ID are never split further (paper, 4.2), so
// a node in a very unbalanced ID distribution knows at most k nodes per
// distance band; lookups then take a few more hops.
class RoutingTable {
 public:
  static constexpr int kNumBuckets = NodeId::kBits;

  explicit RoutingTable(const NodeId& self, RoutingTableOptions options = {});

  // Records that `contact` was heard from at `now` (any request or reply,
  // including a pong to an eviction ping).
  ObserveOutcome Observe(const Contact& contact, absl::Time now);

  // Records that a request to `id` timed out. A contact with an outstanding
  // eviction ping is removed at once (paper, 2.2); others after
  // max_failures consecutive failures. Either way the most recently seen
  // replacement takes its place. Returns true if `id` was removed.
  // TODO: one lost eviction ping drops a live contact, as in the paper; the
  // caller should retry the ping before reporting failure, or a lossy link
  // churns full buckets.
  bool RecordFailure(const NodeId& id);

  // Up to `n` stored contacts, closest to `target` first by XOR distance.
  std::vector<Contact> FindClosest(const NodeId& target, size_t n) const;

  bool Contains(const NodeId& id) const;
  // Number of contacts stored in buckets (replacements not counted).
  size_t size() const;
  // Bucket `index` in [0, 256), least recently seen first.
  std::vector<Contact> BucketContacts(int index) const;
  // Bucket `index`'s replacement cache, most recently seen first.
  std::vector<Contact> ReplacementContacts(int index) const;

  const NodeId& self() const { return self_; }

 private:
  struct Entry {
    Contact contact;
    absl::Time last_seen;
    int failures = 0;
    bool ping_pending = false;
  };
  struct Bucket {
    // Least recently seen at the front, as in the paper.
    std::vector<Entry> live;
    // Most recently seen at the back.
    std::vector<Entry> replacements;
  };

  Bucket& BucketFor(const NodeId& id);
  ObserveOutcome AddToFullBucket(Bucket& bucket, const Contact& contact,
                                 absl::Time now);
  void RemoveAndPromote(Bucket& bucket, size_t live_index);

  // Set at construction.
  const NodeId self_;
  const RoutingTableOptions options_;

  std::array<Bucket, kNumBuckets> buckets_;
  size_t size_ = 0;
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_ROUTING_TABLE_H_
