#include "dht/lookup.h"

#include <algorithm>

#include "glog/logging.h"

namespace shoal::dht {

Lookup::Lookup(const NodeId& self, const NodeId& target, LookupOptions options)
    : self_(self), target_(target), options_(options) {
  CHECK_GT(options_.k, 0u);
  CHECK_GT(options_.alpha, 0u);
}

void Lookup::AddSeeds(const std::vector<Contact>& contacts) {
  for (const Contact& contact : contacts) AddCandidate(contact, 1);
}

void Lookup::AddLocalProviders(const std::vector<Endpoint>& providers) {
  for (const Endpoint& provider : providers) {
    if (provider_set_.insert(provider).second) providers_.push_back(provider);
  }
  if (!providers_.empty() && provider_hops_ < 0) provider_hops_ = 0;
}

void Lookup::AddCandidate(const Contact& contact, int hops) {
  if (contact.id == self_) return;
  if (Candidate* known = Find(contact.id)) {
    // A shorter path to a contact not yet queried lowers its hop count.
    if (known->state == State::kNew) known->hops = std::min(known->hops, hops);
    return;
  }
  Candidate candidate{contact, Distance(contact.id, target_), hops};
  auto it = std::lower_bound(candidates_.begin(), candidates_.end(), candidate,
                             [](const Candidate& a, const Candidate& b) {
                               return a.distance < b.distance;
                             });
  candidates_.insert(it, std::move(candidate));
}

Lookup::Candidate* Lookup::Find(const NodeId& id) {
  // Linear: a lookup sees a few hundred contacts at most (k per reply, a few
  // rounds), and the scan is cheaper than keeping an index in sync.
  for (Candidate& c : candidates_) {
    if (c.contact.id == id) return &c;
  }
  return nullptr;
}

std::vector<Contact> Lookup::NextToQuery() {
  std::vector<Contact> next;
  if (done()) return next;
  size_t considered = 0;
  for (Candidate& c : candidates_) {
    if (in_flight_ >= options_.alpha || considered >= options_.k) break;
    if (c.state == State::kFailed) continue;
    ++considered;
    if (c.state != State::kNew) continue;
    c.state = State::kInFlight;
    ++in_flight_;
    ++queried_;
    next.push_back(c.contact);
  }
  return next;
}

void Lookup::Finish(Candidate& candidate, State state) {
  if (candidate.state == State::kSlow) {
    --slow_;
  } else {
    --in_flight_;
  }
  candidate.state = state;
}

bool Lookup::OnReply(const NodeId& from, const std::vector<Contact>& closer,
                     const std::vector<Endpoint>& providers) {
  Candidate* c = Find(from);
  if (c == nullptr ||
      (c->state != State::kInFlight && c->state != State::kSlow)) {
    return false;
  }
  Finish(*c, State::kAnswered);
  const int hops = c->hops;  // `c` dangles once candidates are inserted.
  max_answered_hops_ = std::max(max_answered_hops_, hops);

  bool new_provider = false;
  for (const Endpoint& provider : providers) {
    if (!provider_set_.insert(provider).second) continue;
    providers_.push_back(provider);
    new_provider = true;
  }
  if (new_provider && provider_hops_ < 0) provider_hops_ = hops;
  for (const Contact& contact : closer) AddCandidate(contact, hops + 1);
  return true;
}

bool Lookup::OnFailure(const NodeId& from) {
  Candidate* c = Find(from);
  if (c == nullptr ||
      (c->state != State::kInFlight && c->state != State::kSlow)) {
    return false;
  }
  Finish(*c, State::kFailed);
  return true;
}

bool Lookup::OnSlow(const NodeId& from) {
  Candidate* c = Find(from);
  if (c == nullptr || c->state != State::kInFlight) return false;
  c->state = State::kSlow;
  --in_flight_;
  ++slow_;
  return true;
}

bool Lookup::done() const {
  if (options_.enough_providers > 0 &&
      providers_.size() >= options_.enough_providers) {
    return true;
  }
  size_t considered = 0;
  for (const Candidate& c : candidates_) {
    if (considered >= options_.k) break;
    if (c.state == State::kFailed) continue;
    ++considered;
    if (c.state == State::kSlow && !options_.wait_for_slow) continue;
    if (c.state != State::kAnswered) return false;
  }
  return true;
}

std::vector<Contact> Lookup::Closest() const {
  std::vector<Contact> closest;
  for (const Candidate& c : candidates_) {
    if (closest.size() >= options_.k) break;
    if (c.state == State::kAnswered) closest.push_back(c.contact);
  }
  return closest;
}

int Lookup::hops() const {
  return provider_hops_ >= 0 ? provider_hops_ : max_answered_hops_;
}

}  // namespace shoal::dht
