// The iterative Kademlia lookup (Maymounkov & Mazieres, section 2.3) as a
// state machine with no I/O and no clock: the caller asks which contacts to
// query, sends the requests itself and reports replies, failures and soft
// timeouts back. One Lookup serves both FIND_NODE and GET_PROVIDERS. Owned by
// the DHT node and used only on its event-loop thread: not thread-safe.
#ifndef SHOAL_DHT_LOOKUP_H_
#define SHOAL_DHT_LOOKUP_H_

#include <cstddef>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "dht/endpoint.h"
#include "dht/node_id.h"

namespace shoal::dht {

struct LookupOptions {
  // Result size k: the lookup ends once the k closest contacts seen have all
  // answered or failed. Equal to the bucket size and to kMaxContacts, so one
  // reply can carry a whole result.
  size_t k = 20;
  // Parallelism alpha: requests outstanding at once, not counting slow ones.
  // 3 is the paper's value (2.3): enough that one dead contact does not stall
  // the lookup, few enough not to flood the k closest nodes.
  size_t alpha = 3;
  // Provider lookups stop as soon as this many distinct providers are known;
  // 0 never stops early. A fetcher needs only a few sources.
  size_t enough_providers = 0;
  // Whether done() waits for slow contacts (soft timeout passed) among the k
  // closest. True keeps the paper's convergence, which FIND_NODE for
  // Provide needs: a record must reach the real k closest. False lets a
  // provider lookup that found nothing end once only slow contacts are left,
  // instead of holding the caller until their hard timeout (300 ms); a slow
  // contact is most often one whose request or reply was lost.
  bool wait_for_slow = true;
};

// State of one lookup towards `target`. Contacts are kept sorted by XOR
// distance to the target; only the k closest not-failed ones are ever queried,
// alpha at a time. A contact reported slow (its soft timeout fired) no longer
// counts against alpha, so the lookup moves on, but it stays a candidate and
// its reply is still used if it comes before the request's hard timeout
// (paper, 2.3: unresponsive nodes are dropped from consideration "until and
// unless they do respond").
//
// Hops: a seed is one hop away; a contact first learned from a reply of a
// contact h hops away is h + 1 hops away (the least such h wins). hops() is
// the hop count of the first reply that carried providers, or, without
// providers, the largest hop count among contacts that answered.
class Lookup {
 public:
  // `self` is never queried nor returned, even if a peer lists it.
  Lookup(const NodeId& self, const NodeId& target, LookupOptions options = {});

  // Adds starting contacts (one hop away), normally the routing table's k
  // closest to the target. Duplicates and `self` are ignored.
  void AddSeeds(const std::vector<Contact>& contacts);

  // Adds providers known without asking anyone (the node's own store); they
  // count as found at hop 0.
  void AddLocalProviders(const std::vector<Endpoint>& providers);

  // Contacts to send a request to now, closest first; each is marked in
  // flight. Empty when alpha requests are outstanding, nothing is left to
  // query, or the lookup is done. Call again after every event.
  std::vector<Contact> NextToQuery();

  // `from` answered with `closer` contacts (its k closest to the target) and,
  // for GET_PROVIDERS, `providers`. Returns false, changing nothing, if
  // `from` had no request outstanding (unknown, already answered or failed):
  // duplicates are ignored.
  bool OnReply(const NodeId& from, const std::vector<Contact>& closer,
               const std::vector<Endpoint>& providers = {});

  // The request to `from` failed (hard timeout or send error); it is dropped
  // from the candidates. Returns false if `from` had no request outstanding.
  bool OnFailure(const NodeId& from);

  // The request to `from` passed its soft timeout: it no longer takes one of
  // the alpha slots, but its reply is still accepted. Returns false if
  // `from` is not in flight or already slow.
  bool OnSlow(const NodeId& from);

  // True once the k closest non-failed contacts have all answered (or none
  // are left; slow ones do not count unless options.wait_for_slow), or
  // enough providers were found. NextToQuery() is then empty.
  bool done() const;

  // Up to k contacts that answered, closest to the target first.
  std::vector<Contact> Closest() const;
  // Distinct providers, in the order found.
  const std::vector<Endpoint>& providers() const { return providers_; }
  int hops() const;
  // Requests handed out by NextToQuery() so far.
  size_t queried() const { return queried_; }
  // Requests outstanding, slow ones included.
  size_t in_flight() const { return in_flight_ + slow_; }
  const NodeId& target() const { return target_; }

 private:
  enum class State { kNew, kInFlight, kSlow, kAnswered, kFailed };
  struct Candidate {
    Contact contact;
    NodeId distance;  // To the target; the sort key.
    int hops;
    State state = State::kNew;
  };

  void AddCandidate(const Contact& contact, int hops);
  Candidate* Find(const NodeId& id);
  void Finish(Candidate& candidate, State state);

  // Set at construction.
  const NodeId self_;
  const NodeId target_;
  const LookupOptions options_;

  // Sorted by distance; failed ones stay so a later mention is ignored.
  std::vector<Candidate> candidates_;
  absl::flat_hash_set<Endpoint> provider_set_;
  std::vector<Endpoint> providers_;
  int provider_hops_ = -1;  // Hops of the first reply with providers.
  int max_answered_hops_ = 0;
  size_t in_flight_ = 0;  // Not slow.
  size_t slow_ = 0;
  size_t queried_ = 0;
};

}  // namespace shoal::dht

#endif  // SHOAL_DHT_LOOKUP_H_
