#include "dht/node.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/types/variant.h"
#include "glog/logging.h"

namespace shoal::dht {
namespace {

// Tries per bootstrap seed. With 1% loss each way a round trip fails 2% of
// the time, so three tries all fail with probability 8e-6; a dead seed costs
// three RPC timeouts (0.9 s).
constexpr int kBootstrapAttempts = 3;
// ExpireAll() runs at most this often: a minute's worth of expired records
// held is a small overshoot, and the scan touches every record.
constexpr absl::Duration kExpireAllEvery = absl::Minutes(1);

}  // namespace

struct Node::LookupRun {
  LookupRun(const NodeId& self, const NodeId& target, LookupOptions options,
            LookupKind kind, LookupDone done)
      : lookup(self, target, options), kind(kind), done(std::move(done)) {}

  Lookup lookup;
  LookupKind kind;
  // Soft-timeout timers of requests not yet answered or slow.
  absl::flat_hash_map<NodeId, Clock::TimerId> soft_timers;
  LookupDone done;
};

struct Node::WatchedProvider {
  Endpoint endpoint;      // Its DHT endpoint: where its ADD_PROVIDER came from.
  absl::Time heard;       // Last request or reply from it, or when first seen.
  bool checking = false;  // A check PING is outstanding.
};

struct Node::BootstrapRun {
  size_t waiting;  // FIND_NODE(self) requests to seeds without an outcome.
  DoneCallback done;
};

struct Node::Announcement {
  bool withdraw;
  size_t keys_total;
  size_t lookups_pending;
  size_t requests_pending = 0;
  // Destination -> keys it is among the k closest of. An ordered map keeps
  // the send order, and so simulations, deterministic.
  std::map<NodeId, std::pair<Contact, std::vector<NodeId>>> by_node;
  absl::flat_hash_set<NodeId> acked;  // Keys stored somewhere.
  DoneCallback done;
};

Node::Node(const NodeId& id, Transport& transport, Clock& clock,
           absl::BitGenRef gen, NodeOptions options)
    : id_(id),
      transport_(transport),
      clock_(clock),
      options_(std::move(options)),
      provider_endpoint_(
          options_.provider_endpoint.value_or(transport.local_endpoint())),
      table_(id, options_.routing),
      store_(options_.store),
      rpc_(id, transport, clock, gen, options_.rpc) {
  CHECK_GT(options_.alpha, 0u);
  CHECK_LE(options_.soft_timeout_floor, options_.soft_timeout);
  CHECK_GT(options_.soft_timeout_rtt_factor, 0);
  CHECK_GT(options_.provider_ttl, absl::ZeroDuration());
  CHECK_LE(options_.provider_ttl, kMaxProviderTtl);
  CHECK_LT(options_.republish_interval, options_.provider_ttl);
  CHECK_GT(options_.republish_batch_keys, 0u);
  rpc_.SetRequestHandler([this](const Endpoint& from, Message request) {
    OnRequest(from, std::move(request));
  });
}

Node::~Node() {
  for (auto& [lookup_id, run] : lookups_) {
    for (auto& [peer, timer] : run->soft_timers) clock_.Cancel(timer);
  }
  for (auto& [key, timer] : deferred_) clock_.Cancel(timer);
  if (check_timer_ != Clock::kNoTimer) clock_.Cancel(check_timer_);
  if (republish_timer_ != Clock::kNoTimer) clock_.Cancel(republish_timer_);
}

// ---------------------------------------------------------------------------
// Incoming requests.

void Node::OnRequest(const Endpoint& from, Message request) {
  Learn(Contact{request.sender, from});
  Heard(request.sender);

  Body reply = Pong{};  // PING, ADD_PROVIDER and WITHDRAW_PROVIDER.
  if (const auto* find = absl::get_if<FindNode>(&request.body)) {
    reply = HandleFindNode(*find);
  } else if (const auto* get = absl::get_if<GetProviders>(&request.body)) {
    reply = HandleGetProviders(*get);
  } else if (const auto* add = absl::get_if<AddProvider>(&request.body)) {
    reply = HandleAddProvider(Contact{request.sender, from}, *add);
  } else if (const auto* w = absl::get_if<WithdrawProvider>(&request.body)) {
    reply = HandleWithdraw(request.sender, *w);
  }

  absl::Status sent =
      rpc_.SendReply(from, request.request_id, std::move(reply));
  if (!sent.ok()) {
    VLOG(1) << "dht: reply failed to=" << from.ToString()
            << " error=" << sent.message();
  }
}

Body Node::HandleFindNode(const FindNode& request) const {
  return Nodes{table_.FindClosest(request.target, kMaxContacts)};
}

Body Node::HandleGetProviders(const GetProviders& request) const {
  Providers reply;
  for (const ProviderRecord& record :
       store_.Get(request.key, clock_.Now(), kMaxProviders)) {
    reply.providers.push_back(record.endpoint);
  }
  reply.closer = table_.FindClosest(request.key, kMaxContacts);
  return reply;
}

Body Node::HandleAddProvider(const Contact& sender,
                             const AddProvider& request) {
  // PONG whatever the store says: the requester cannot act on a refusal,
  // and the other k - 1 nodes may still have room.
  for (const NodeId& key : request.keys) {
    absl::StatusOr<AddProviderResult> added =
        store_.Add(key, sender.id, request.provider, request.ttl, clock_.Now());
    if (!added.ok()) ++counters_.records_refused;
  }
  // Check the provider from now on; a known one keeps its state, and its
  // endpoint is updated as a refresh updates the record's.
  if (store_.RecordsOf(sender.id) > 0) {
    WatchedProvider& watched = watched_[sender.id];
    watched.endpoint = sender.endpoint;
    watched.heard = clock_.Now();
    ArmProviderCheck();
  }
  return Pong{};
}

Body Node::HandleWithdraw(const NodeId& sender,
                          const WithdrawProvider& request) {
  for (const NodeId& key : request.keys) store_.Withdraw(key, sender);
  return Pong{};
}

// ---------------------------------------------------------------------------
// Routing table upkeep.

void Node::Learn(const Contact& contact) {
  ObserveOutcome outcome = table_.Observe(contact, clock_.Now());
  if (outcome.ping_candidate.has_value()) {
    PingCandidate(*outcome.ping_candidate);
  }
}

void Node::PingCandidate(const Contact& candidate) {
  // Ping-before-evict (paper, 2.2): the bucket is full, so its least
  // recently seen contact keeps its slot only if it still answers.
  ++counters_.eviction_pings;
  absl::Status sent =
      rpc_.SendRequest(candidate.endpoint, Ping{},
                       [this, candidate](absl::StatusOr<Message> reply) {
                         LearnFromReply(candidate, reply);
                       });
  if (!sent.ok()) Forget(candidate.id);
}

bool Node::LearnFromReply(const Contact& to,
                          const absl::StatusOr<Message>& reply) {
  if (!reply.ok()) {
    Forget(to.id);
    return false;
  }
  Learn(Contact{reply->sender, to.endpoint});
  Heard(reply->sender);
  if (reply->sender == to.id) return true;
  // Another node now answers at that endpoint: the one we knew is gone.
  Forget(to.id);
  return false;
}

void Node::Forget(const NodeId& id) {
  if (!table_.RecordFailure(id)) return;
  // Removed after repeated failures: its records would send fetchers to a
  // dead endpoint.
  // TODO: a node that only our link to it fails (a one-sided partition) loses
  // its records here too, although fetchers elsewhere could still reach it;
  // it gets them back only when it provides again.
  size_t removed = store_.RemoveProvider(id);
  VLOG(1) << "dht: dropped contact id=" << id.ShortHex()
          << " records_removed=" << removed;
}

// ---------------------------------------------------------------------------
// Lookups.

void Node::StartLookup(const NodeId& target, LookupKind kind,
                       const std::vector<Endpoint>& local_providers,
                       LookupDone done) {
  LookupOptions lookup_options;
  lookup_options.k = options_.routing.bucket_size;
  lookup_options.alpha = options_.alpha;
  if (kind == LookupKind::kGetProviders) {
    lookup_options.enough_providers = options_.enough_providers;
    // A fetcher wants an answer now; FIND_NODE for Provide keeps waiting,
    // as its records must reach the real k closest.
    lookup_options.wait_for_slow = false;
  }
  auto run = std::make_unique<LookupRun>(id_, target, lookup_options, kind,
                                         std::move(done));
  run->lookup.AddLocalProviders(local_providers);
  run->lookup.AddSeeds(table_.FindClosest(target, lookup_options.k));

  const uint64_t lookup_id = next_op_id_++;
  lookups_.emplace(lookup_id, std::move(run));
  ++counters_.lookups_started;
  // Deferred so that `done` never runs inside the public method.
  Defer([this, lookup_id] { Pump(lookup_id); });
}

void Node::Pump(uint64_t lookup_id) {
  auto it = lookups_.find(lookup_id);
  if (it == lookups_.end()) return;
  LookupRun& run = *it->second;
  // A failed send frees a slot at once, so ask again until nothing is left.
  for (std::vector<Contact> next = run.lookup.NextToQuery(); !next.empty();
       next = run.lookup.NextToQuery()) {
    for (const Contact& to : next) SendLookupRequest(lookup_id, run, to);
  }
  if (run.lookup.done()) FinishLookup(lookup_id);
}

void Node::SendLookupRequest(uint64_t lookup_id, LookupRun& run,
                             const Contact& to) {
  const NodeId& target = run.lookup.target();
  Body request = run.kind == LookupKind::kFindNode
                     ? Body(shoal::dht::FindNode{target})
                     : Body(GetProviders{target});
  absl::Status sent = rpc_.SendRequest(
      to.endpoint, std::move(request),
      [this, lookup_id, to, at = clock_.Now()](absl::StatusOr<Message> reply) {
        OnLookupReply(lookup_id, to, at, std::move(reply));
      });
  if (!sent.ok()) {
    run.lookup.OnFailure(to.id);
    return;
  }
  ++counters_.lookup_requests;
  run.soft_timers[to.id] = clock_.Schedule(
      SoftTimeout(),
      [this, lookup_id, id = to.id] { OnSoftTimeout(lookup_id, id); });
}

void Node::SampleRtt(absl::Duration rtt) {
  ++counters_.rtt_samples;
  srtt_ = srtt_ == absl::ZeroDuration() ? rtt : srtt_ + (rtt - srtt_) / 8;
}

absl::Duration Node::SoftTimeout() const {
  if (srtt_ == absl::ZeroDuration()) return options_.soft_timeout;
  return std::clamp(srtt_ * options_.soft_timeout_rtt_factor,
                    options_.soft_timeout_floor, options_.soft_timeout);
}

void Node::OnLookupReply(uint64_t lookup_id, const Contact& to, absl::Time sent,
                         absl::StatusOr<Message> reply) {
  // The routing table learns from the outcome even if the lookup is over.
  const bool from_to = LearnFromReply(to, reply);
  if (from_to) SampleRtt(clock_.Now() - sent);
  auto it = lookups_.find(lookup_id);
  if (it == lookups_.end()) return;
  LookupRun& run = *it->second;

  auto timer = run.soft_timers.find(to.id);
  if (timer != run.soft_timers.end()) {
    clock_.Cancel(timer->second);
    run.soft_timers.erase(timer);
  }
  if (!from_to) {
    run.lookup.OnFailure(to.id);
  } else if (const auto* nodes = absl::get_if<Nodes>(&reply->body)) {
    run.lookup.OnReply(to.id, nodes->contacts);
  } else if (const auto* found = absl::get_if<Providers>(&reply->body)) {
    run.lookup.OnReply(to.id, found->closer, found->providers);
  }
  Pump(lookup_id);
}

void Node::OnSoftTimeout(uint64_t lookup_id, const NodeId& to) {
  auto it = lookups_.find(lookup_id);
  if (it == lookups_.end()) return;
  LookupRun& run = *it->second;
  run.soft_timers.erase(to);
  if (!run.lookup.OnSlow(to)) return;
  ++counters_.soft_timeouts;
  Pump(lookup_id);
}

void Node::FinishLookup(uint64_t lookup_id) {
  auto it = lookups_.find(lookup_id);
  DCHECK(it != lookups_.end());
  std::unique_ptr<LookupRun> run = std::move(it->second);
  lookups_.erase(it);
  for (auto& [peer, timer] : run->soft_timers) clock_.Cancel(timer);
  VLOG(2) << "dht: lookup done target=" << run->lookup.target().ShortHex()
          << " queried=" << run->lookup.queried()
          << " hops=" << run->lookup.hops();
  run->done(run->lookup);
}

void Node::FindClosestNodes(const NodeId& target,
                            FindClosestNodesCallback done) {
  StartLookup(target, LookupKind::kFindNode, {},
              [done = std::move(done)](const Lookup& lookup) {
                done(lookup.Closest());
              });
}

void Node::FindProviders(const NodeId& key, FindProvidersCallback done) {
  std::vector<Endpoint> local;
  for (const ProviderRecord& record : store_.Get(key, clock_.Now())) {
    local.push_back(record.endpoint);
  }
  StartLookup(key, LookupKind::kGetProviders, local,
              [done = std::move(done)](const Lookup& lookup) {
                done(FindProvidersResult{lookup.providers(), lookup.hops(),
                                         lookup.queried()});
              });
}

// ---------------------------------------------------------------------------
// Bootstrap.

void Node::Bootstrap(const std::vector<Endpoint>& seeds, DoneCallback done) {
  const uint64_t op = next_op_id_++;
  auto run = std::make_unique<BootstrapRun>();
  run->waiting = 0;
  run->done = std::move(done);
  BootstrapRun& ref = *run;
  bootstraps_.emplace(op, std::move(run));

  for (const Endpoint& seed : seeds) {
    if (SendBootstrapRequest(op, seed, /*attempt=*/1)) ++ref.waiting;
  }
  if (ref.waiting == 0) Defer([this, op] { FinishBootstrap(op); });
}

bool Node::SendBootstrapRequest(uint64_t op, const Endpoint& seed,
                                int attempt) {
  // The seeds' IDs are unknown, so FIND_NODE(self) rather than PING: the
  // reply names the seed and already lists our neighbourhood.
  absl::Status sent = rpc_.SendRequest(
      seed, shoal::dht::FindNode{id_},
      [this, op, seed, attempt](absl::StatusOr<Message> reply) {
        OnBootstrapReply(op, seed, attempt, std::move(reply));
      });
  return sent.ok();
}

void Node::OnBootstrapReply(uint64_t op, const Endpoint& seed, int attempt,
                            absl::StatusOr<Message> reply) {
  if (reply.ok()) Learn(Contact{reply->sender, seed});
  auto it = bootstraps_.find(op);
  if (it == bootstraps_.end()) return;
  // A lost datagram must not strand a node with a single seed.
  if (!reply.ok() && attempt < kBootstrapAttempts &&
      SendBootstrapRequest(op, seed, attempt + 1)) {
    return;
  }
  if (--it->second->waiting == 0) FinishBootstrap(op);
}

// TODO: the paper (2.3) also refreshes every bucket farther than the closest
// neighbour after joining, and every bucket idle for an hour; neither is done,
// so a node's far buckets fill only from incoming requests and lookups.
void Node::FinishBootstrap(uint64_t op) {
  auto it = bootstraps_.find(op);
  if (it == bootstraps_.end()) return;
  DoneCallback done = std::move(it->second->done);
  bootstraps_.erase(it);

  // The lookup of our own ID introduces us to our neighbourhood (paper, 2.3).
  StartLookup(id_, LookupKind::kFindNode, {},
              [this, done = std::move(done)](const Lookup& lookup) {
                const size_t known = table_.size();
                VLOG(1) << "dht: bootstrapped id=" << id_.ShortHex()
                        << " contacts=" << known
                        << " queried=" << lookup.queried();
                done(known > 0 ? absl::OkStatus()
                               : absl::UnavailableError(
                                     "dht: bootstrap learned no contacts"));
              });
}

// ---------------------------------------------------------------------------
// Provide / Withdraw.

void Node::Provide(const std::vector<NodeId>& keys, DoneCallback done) {
  const bool was_empty = provided_.empty();
  provided_.insert(keys.begin(), keys.end());
  // The first round starts one interval after the set became non-empty.
  if (was_empty) ArmRepublish(options_.republish_interval);
  Announce(keys, /*withdraw=*/false, std::move(done));
}

void Node::Withdraw(const std::vector<NodeId>& keys, DoneCallback done) {
  // A withdrawn key still queued for this round is skipped when its batch
  // is taken.
  for (const NodeId& key : keys) provided_.erase(key);
  Announce(keys, /*withdraw=*/true, std::move(done));
}

// TODO: every key starts its own lookup at once, so Provide() of 10,000 keys
// sends ~30,000 FIND_NODE requests in one burst and trips peers' rate
// limits; a cap on concurrent lookups would spread them.
void Node::Announce(const std::vector<NodeId>& keys, bool withdraw,
                    DoneCallback done) {
  std::set<NodeId> unique(keys.begin(), keys.end());
  if (unique.empty()) {
    Defer([done = std::move(done)] {
      done(absl::InvalidArgumentError("dht: no keys to announce"));
    });
    return;
  }
  const uint64_t op = next_op_id_++;
  auto announcement = std::make_unique<Announcement>();
  announcement->withdraw = withdraw;
  announcement->keys_total = unique.size();
  announcement->lookups_pending = unique.size();
  announcement->done = std::move(done);
  announcements_.emplace(op, std::move(announcement));

  for (const NodeId& key : unique) {
    if (withdraw) store_.Withdraw(key, id_);
    StartLookup(key, LookupKind::kFindNode, {},
                [this, op, key](const Lookup& lookup) {
                  OnAnnounceLookup(op, key, lookup);
                });
  }
}

bool Node::AmongClosest(const NodeId& key,
                        const std::vector<Contact>& closest) const {
  return closest.size() < options_.routing.bucket_size ||
         CloserTo(key, id_, closest.back().id);
}

void Node::OnAnnounceLookup(uint64_t op, const NodeId& key,
                            const Lookup& lookup) {
  auto it = announcements_.find(op);
  if (it == announcements_.end()) return;
  Announcement& a = *it->second;

  std::vector<Contact> closest = lookup.Closest();
  for (const Contact& contact : closest) {
    auto& [dest, dest_keys] = a.by_node[contact.id];
    dest = contact;
    dest_keys.push_back(key);
  }
  if (AmongClosest(key, closest)) {
    // We are one of the key's k closest nodes, so we hold its record too.
    if (a.withdraw || store_
                          .Add(key, id_, provider_endpoint_,
                               options_.provider_ttl, clock_.Now())
                          .ok()) {
      a.acked.insert(key);
    }
  }
  if (--a.lookups_pending == 0) SendAnnouncements(op);
}

std::vector<Body> Node::AnnouncementBodies(const Announcement& announcement,
                                           const std::vector<NodeId>& keys) {
  std::vector<Body> bodies;
  if (announcement.withdraw) {
    for (size_t i = 0; i < keys.size(); i += kMaxKeysPerMessage) {
      size_t end = std::min(keys.size(), i + kMaxKeysPerMessage);
      bodies.push_back(WithdrawProvider{
          std::vector<NodeId>(keys.begin() + i, keys.begin() + end)});
    }
    return bodies;
  }
  absl::StatusOr<std::vector<AddProvider>> split =
      SplitAddProvider(keys, provider_endpoint_, options_.provider_ttl);
  // Keys are non-empty and the endpoint and TTL were checked at
  // construction, so this cannot fail.
  CHECK(split.ok()) << split.status();
  for (AddProvider& add : *split) bodies.push_back(std::move(add));
  return bodies;
}

void Node::SendAnnouncements(uint64_t op) {
  Announcement& a = *announcements_.at(op);
  for (const auto& [node_id, entry] : a.by_node) {
    const Contact& to = entry.first;
    for (Body& body : AnnouncementBodies(a, entry.second)) {
      Body copy = body;
      absl::Status sent =
          rpc_.SendRequest(to.endpoint, std::move(copy),
                           [this, op, body, to](absl::StatusOr<Message> reply) {
                             OnAnnounceReply(op, body, to, std::move(reply));
                           });
      if (sent.ok()) ++a.requests_pending;
    }
  }
  if (a.requests_pending == 0) FinishAnnouncement(op);
}

// A lost ADD_PROVIDER is not retried: the key is still stored at the other
// k - 1 nodes, and the next republish round restores it.
void Node::OnAnnounceReply(uint64_t op, const Body& body, const Contact& to,
                           absl::StatusOr<Message> reply) {
  const bool acked = LearnFromReply(to, reply);
  auto it = announcements_.find(op);
  if (it == announcements_.end()) return;
  Announcement& a = *it->second;
  if (acked) {
    const std::vector<NodeId>& keys =
        a.withdraw ? absl::get<WithdrawProvider>(body).keys
                   : absl::get<AddProvider>(body).keys;
    a.acked.insert(keys.begin(), keys.end());
  }
  if (--a.requests_pending == 0) FinishAnnouncement(op);
}

void Node::FinishAnnouncement(uint64_t op) {
  auto it = announcements_.find(op);
  DCHECK(it != announcements_.end());
  std::unique_ptr<Announcement> a = std::move(it->second);
  announcements_.erase(it);
  const size_t missing = a->keys_total - a->acked.size();
  if (missing == 0) {
    a->done(absl::OkStatus());
    return;
  }
  a->done(absl::UnavailableError(absl::StrCat(
      "dht: ", missing, " of ", a->keys_total, " keys reached no node (",
      a->withdraw ? "withdraw" : "provide", ")")));
}

// ---------------------------------------------------------------------------
// Provider checks.

// TODO: any datagram naming a provider's ID counts as hearing from it, and
// sender IDs are not authenticated, so a spoofer can keep a dead provider's
// records alive by sending requests under its ID every 10 s.
void Node::Heard(const NodeId& id) {
  auto it = watched_.find(id);
  if (it != watched_.end()) it->second.heard = clock_.Now();
}

void Node::ArmProviderCheck() {
  if (options_.provider_check_interval <= absl::ZeroDuration() ||
      check_timer_ != Clock::kNoTimer || watched_.empty()) {
    return;
  }
  check_timer_ = clock_.Schedule(options_.provider_check_tick, [this] {
    check_timer_ = Clock::kNoTimer;
    OnProviderCheckTick();
  });
}

// Pings the providers not heard from for the longest, at most
// provider_checks_per_tick of them, and forgets providers we no longer hold
// records of.
void Node::OnProviderCheckTick() {
  const absl::Time now = clock_.Now();
  if (now - last_expire_all_ >= kExpireAllEvery) {
    store_.ExpireAll(now);
    last_expire_all_ = now;
  }
  std::vector<std::pair<absl::Time, NodeId>> due;
  for (auto it = watched_.begin(); it != watched_.end();) {
    if (store_.RecordsOf(it->first) == 0) {
      watched_.erase(it++);
      continue;
    }
    const WatchedProvider& w = it->second;
    if (!w.checking && now - w.heard >= options_.provider_check_interval) {
      due.emplace_back(w.heard, it->first);
    }
    ++it;
  }
  // Oldest first; ties by ID keep simulations deterministic.
  const size_t n = std::min(due.size(), options_.provider_checks_per_tick);
  std::partial_sort(due.begin(), due.begin() + n, due.end());
  for (size_t i = 0; i < n; ++i) PingProvider(due[i].second, /*attempt=*/1);
  ArmProviderCheck();
}

void Node::PingProvider(const NodeId& id, int attempt) {
  auto it = watched_.find(id);
  if (it == watched_.end()) return;
  it->second.checking = true;
  ++counters_.provider_pings;
  const Contact to{id, it->second.endpoint};
  absl::Status sent = rpc_.SendRequest(
      to.endpoint, Ping{}, [this, to, attempt](absl::StatusOr<Message> reply) {
        // Counts against the routing table as any failed request does.
        LearnFromReply(to, reply);
        OnProviderPong(to.id, attempt, reply);
      });
  if (!sent.ok()) OnProviderPong(id, attempt, sent);
}

void Node::OnProviderPong(const NodeId& id, int attempt,
                          const absl::StatusOr<Message>& reply) {
  auto it = watched_.find(id);
  if (it == watched_.end()) return;
  if (reply.ok() && reply->sender == id) {
    it->second.checking = false;  // Heard() already set `heard`.
    return;
  }
  // Retry at once: a lost datagram must not cost a live provider its
  // records, and a dead one should go within seconds, not intervals.
  if (attempt < options_.provider_check_attempts) {
    PingProvider(id, attempt + 1);
    return;
  }
  const size_t removed = store_.RemoveProvider(id);
  watched_.erase(it);
  ++counters_.providers_removed;
  VLOG(1) << "dht: provider check failed id=" << id.ShortHex()
          << " records_removed=" << removed;
}

// ---------------------------------------------------------------------------
// Republish.

void Node::ArmRepublish(absl::Duration delay) {
  if (options_.republish_interval <= absl::ZeroDuration() ||
      republish_timer_ != Clock::kNoTimer || republish_in_flight_ ||
      provided_.empty()) {
    return;
  }
  republish_timer_ = clock_.Schedule(delay, [this] {
    republish_timer_ = Clock::kNoTimer;
    OnRepublishTick();
  });
}

// Starts a round when the last one is done, then re-provides the next batch
// of the round's keys that are still provided.
void Node::OnRepublishTick() {
  const absl::Time now = clock_.Now();
  if (republish_queue_.empty()) {
    if (provided_.empty()) return;  // Re-armed by the next Provide().
    republish_queue_.assign(provided_.begin(), provided_.end());
    const size_t batches =
        (republish_queue_.size() + options_.republish_batch_keys - 1) /
        options_.republish_batch_keys;
    round_start_ = now;
    batch_spacing_ =
        options_.republish_interval / static_cast<int64_t>(batches);
  }
  std::vector<NodeId> batch;
  while (!republish_queue_.empty() &&
         batch.size() < options_.republish_batch_keys) {
    NodeId key = republish_queue_.front();
    republish_queue_.pop_front();
    if (provided_.count(key) > 0) batch.push_back(key);
  }
  if (batch.empty()) {  // All withdrawn: the round is over early.
    ArmRepublish(round_start_ + options_.republish_interval - now);
    return;
  }
  // TODO: a Withdraw() of a key whose republish batch is in flight can be
  // overtaken by that batch's ADD_PROVIDER at some holders, which then keep
  // the record until its TTL runs out.
  counters_.republished_keys += batch.size();
  republish_in_flight_ = true;
  VLOG(1) << "dht: republishing keys=" << batch.size()
          << " left_in_round=" << republish_queue_.size();
  Announce(batch, /*withdraw=*/false, [this, now](absl::Status status) {
    OnRepublishBatchDone(now, std::move(status));
  });
}

void Node::OnRepublishBatchDone(absl::Time started, absl::Status status) {
  republish_in_flight_ = false;
  if (!status.ok()) {
    // Expected under loss or churn; the next round tries again.
    LOG_EVERY_T(WARNING, 60) << "dht: republish batch failed error=" << status;
  }
  // The next batch one spacing after this one started, or the next round
  // one interval after this round started; never before now.
  const absl::Time next = republish_queue_.empty()
                              ? round_start_ + options_.republish_interval
                              : started + batch_spacing_;
  ArmRepublish(std::max(absl::ZeroDuration(), next - clock_.Now()));
}

void Node::Defer(std::function<void()> callback) {
  const uint64_t key = next_op_id_++;
  deferred_[key] = clock_.Schedule(absl::ZeroDuration(),
                                   [this, key, callback = std::move(callback)] {
                                     deferred_.erase(key);
                                     callback();
                                   });
}

}  // namespace shoal::dht
