#include "dht/rpc.h"

#include <string>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"
#include "absl/types/variant.h"
#include "dht/internal/status_macros.h"
#include "glog/logging.h"

namespace shoal::dht {
namespace {

template <typename T>
size_t IndexOf() {
  return Body(T{}).index();
}

// The reply body a request expects, or nullopt if `body` is not a request.
absl::optional<size_t> ExpectedReply(const Body& body) {
  if (absl::holds_alternative<Ping>(body) ||
      absl::holds_alternative<AddProvider>(body) ||
      absl::holds_alternative<WithdrawProvider>(body)) {
    return IndexOf<Pong>();
  }
  if (absl::holds_alternative<FindNode>(body)) return IndexOf<Nodes>();
  if (absl::holds_alternative<GetProviders>(body)) return IndexOf<Providers>();
  return absl::nullopt;
}

bool IsReply(const Body& body) {
  return absl::holds_alternative<Pong>(body) ||
         absl::holds_alternative<Nodes>(body) ||
         absl::holds_alternative<Providers>(body);
}

}  // namespace

RpcManager::RpcManager(const NodeId& self, Transport& transport, Clock& clock,
                       absl::BitGenRef gen, RpcOptions options)
    : self_(self),
      transport_(transport),
      clock_(clock),
      gen_(gen),
      options_(options),
      limiter_(options.rate_limit) {
  CHECK_GT(options_.timeout, absl::ZeroDuration());
  transport_.SetReceiveCallback(
      [this](const Endpoint& from, absl::string_view datagram) {
        OnDatagram(from, datagram);
      });
}

RpcManager::~RpcManager() {
  transport_.SetReceiveCallback(nullptr);
  for (auto& [key, pending] : pending_) clock_.Cancel(pending.timer);
}

void RpcManager::SetRequestHandler(RequestHandler handler) {
  handler_ = std::move(handler);
}

absl::Status RpcManager::SendRequest(const Endpoint& to, Body request,
                                     ReplyCallback done) {
  return SendRequest(to, std::move(request), options_.timeout, std::move(done));
}

absl::Status RpcManager::SendRequest(const Endpoint& to, Body request,
                                     absl::Duration timeout,
                                     ReplyCallback done) {
  absl::optional<size_t> expected = ExpectedReply(request);
  if (!expected.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dht: ", BodyName(request), " is not a request; to=", to.ToString()));
  }
  Key key(FreshRequestId(to), to);
  Message message{key.first, self_, std::move(request)};

  absl::StatusOr<std::string> bytes = Encode(message);
  absl::Status sent = bytes.ok() ? transport_.Send(to, *bytes) : bytes.status();
  if (!sent.ok()) {
    ++counters_.send_failures;
    return sent;
  }

  ++counters_.requests_sent;
  Clock::TimerId timer =
      clock_.Schedule(timeout, [this, key] { OnTimeout(key); });
  pending_.emplace(key, Pending{*expected, timer, std::move(done)});
  VLOG(2) << "dht: sent request body=" << BodyName(message.body)
          << " to=" << to.ToString() << " id=" << key.first;
  return absl::OkStatus();
}

absl::Status RpcManager::SendReply(const Endpoint& to, uint64_t request_id,
                                   Body reply) {
  if (!IsReply(reply)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dht: ", BodyName(reply), " is not a reply; to=", to.ToString()));
  }
  Message message{request_id, self_, std::move(reply)};
  TrimToFit(message);
  DHT_ASSIGN_OR_RETURN(std::string bytes, Encode(message));
  return transport_.Send(to, bytes);
}

uint64_t RpcManager::FreshRequestId(const Endpoint& to) {
  // Collisions among 2^64 values are vanishingly rare; the loop only makes
  // sure a pending or remembered key is never reused.
  while (true) {
    Key key(absl::Uniform<uint64_t>(gen_), to);
    if (!pending_.contains(key) && !finished_.contains(key)) return key.first;
  }
}

// TODO: requests are rate-limited only after decoding, so a flood still costs
// a protobuf parse per datagram; a cheap per-address counter checked before
// Decode() would save that CPU.
void RpcManager::OnDatagram(const Endpoint& from, absl::string_view datagram) {
  absl::StatusOr<Message> message = Decode(datagram);
  if (!message.ok()) {
    ++counters_.malformed;
    VLOG(1) << "dht: dropping datagram from=" << from.ToString()
            << " reason=malformed error=" << message.status().message();
    return;
  }
  if (IsReply(message->body)) {
    HandleReply(from, *std::move(message));
  } else {
    HandleRequest(from, *std::move(message));
  }
}

void RpcManager::HandleRequest(const Endpoint& from, Message request) {
  if (!limiter_.Allow(from, clock_.Now())) {
    ++counters_.requests_rate_limited;
    VLOG(1) << "dht: dropping request from=" << from.ToString()
            << " reason=rate_limited";
    return;
  }
  ++counters_.requests_received;
  if (handler_) handler_(from, std::move(request));
}

void RpcManager::HandleReply(const Endpoint& from, Message reply) {
  Key key(reply.request_id, from);
  auto it = pending_.find(key);
  if (it == pending_.end()) {
    CountUnmatchedReply(key);
    return;
  }
  if (reply.body.index() != it->second.expected_body) {
    // Keep waiting: the genuine reply may still come.
    ++counters_.wrong_type_replies;
    VLOG(1) << "dht: dropping reply from=" << from.ToString()
            << " reason=wrong_type body=" << BodyName(reply.body);
    return;
  }

  ReplyCallback done = std::move(it->second.done);
  clock_.Cancel(it->second.timer);
  pending_.erase(it);
  Remember(key, Outcome::kReplied);
  ++counters_.replies_matched;
  done(std::move(reply));
}

void RpcManager::CountUnmatchedReply(const Key& key) {
  ForgetOldFinished();
  auto it = finished_.find(key);
  const char* reason = "unsolicited";
  if (it == finished_.end()) {
    ++counters_.unsolicited_replies;
  } else if (it->second == Outcome::kTimedOut) {
    ++counters_.late_replies;
    reason = "late";
  } else {
    ++counters_.duplicate_replies;
    reason = "duplicate";
  }
  VLOG(1) << "dht: dropping reply from=" << key.second.ToString()
          << " reason=" << reason << " id=" << key.first;
}

void RpcManager::OnTimeout(const Key& key) {
  auto it = pending_.find(key);
  // The timer is cancelled when a reply arrives, so the request is there.
  DCHECK(it != pending_.end());
  if (it == pending_.end()) return;

  ReplyCallback done = std::move(it->second.done);
  pending_.erase(it);
  Remember(key, Outcome::kTimedOut);
  ++counters_.timeouts;
  done(absl::DeadlineExceededError(
      absl::StrCat("dht: no reply from ", key.second.ToString(),
                   " id=", key.first, " within the timeout")));
}

void RpcManager::Remember(const Key& key, Outcome outcome) {
  finished_[key] = outcome;
  finished_order_.emplace_back(clock_.Now(), key);
  ForgetOldFinished();
}

void RpcManager::ForgetOldFinished() {
  absl::Time cutoff = clock_.Now() - options_.remember_finished;
  while (!finished_order_.empty() &&
         (finished_order_.size() > options_.max_remembered ||
          finished_order_.front().first < cutoff)) {
    finished_.erase(finished_order_.front().second);
    finished_order_.pop_front();
  }
}

}  // namespace shoal::dht
