#include "plugin/h2_server.h"

#include <errno.h>
#include <glog/logging.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "grpc/health/v1/health.pb.h"
#include "plugin/blob_stream.h"
#include "plugin/file_util.h"

namespace shoal::plugin {
namespace h2_internal {
namespace {

namespace cv1 = ::containerd::services::content::v1;
namespace health = ::grpc::health::v1;

// epoll tags for the two fds that are not connections.
constexpr uint64_t kListenTag = 1;
constexpr uint64_t kWakeTag = 2;

// gRPC's message prefix: a compressed flag byte and a big-endian length.
constexpr size_t kPrefixBytes = 5;
// Room kept before a Read chunk for the prefix and the chunk's protobuf
// header (two tags and two varints).
constexpr size_t kChunkHeadroom = kPrefixBytes + 24;
// Bytes a connection reads per read(2), and serialized frames it gathers
// before a write(2): a whole 32 KiB Read reply fits in one write.
constexpr size_t kReadBytes = 64 << 10;
constexpr size_t kGatherBytes = 256 << 10;
// A Read reply of at least this many bytes is sent from the chunk read from
// the file: each DATA frame is queued as its 9-byte header plus a reference
// into the chunk, and one sendmsg sends what is queued, so the bytes are not
// copied into nghttp2's frame buffer and again into the gather buffer.
// Smaller replies are copied, which keeps a 32 KiB reply one plain write.
constexpr int64_t kInPlaceReadBytes = 256 << 10;
// Copied output goes into a buffer that starts over once it holds this much
// (the old one lives on until what refers to it is written).
constexpr size_t kCopyBufferBytes = 1 << 20;
// iovecs per sendmsg.
constexpr int kMaxIov = 64;
// Flow-control windows we grant: containerd writes 1 MiB messages, so the
// default 64 KiB would cost a round trip per 32 KiB of upload.
constexpr int32_t kStreamWindow = 4 << 20;
constexpr int32_t kConnectionWindow = 16 << 20;
// A Write stream's messages waiting for its thread, in bytes. containerd
// waits for each reply, so more than this is a misbehaving client.
constexpr size_t kMaxInboxBytes = 2 * static_cast<size_t>(kMaxMessageBytes);
constexpr uint32_t kMaxConcurrentStreams = 1000;

enum class Kind {
  kUnknown,
  // Answered on the loop thread.
  kInfo,
  kRead,
  kHealthCheck,
  // Answered on a thread of their own once the request has arrived.
  kUpdate,
  kList,
  kDelete,
  kStatus,
  kListStatuses,
  kAbort,
  // A thread of its own from the request headers on.
  kWrite,
};

Kind KindOf(absl::string_view path) {
  static const auto* kinds = new absl::flat_hash_map<std::string, Kind>{
      {"/containerd.services.content.v1.Content/Info", Kind::kInfo},
      {"/containerd.services.content.v1.Content/Read", Kind::kRead},
      {"/containerd.services.content.v1.Content/Update", Kind::kUpdate},
      {"/containerd.services.content.v1.Content/List", Kind::kList},
      {"/containerd.services.content.v1.Content/Delete", Kind::kDelete},
      {"/containerd.services.content.v1.Content/Status", Kind::kStatus},
      {"/containerd.services.content.v1.Content/ListStatuses",
       Kind::kListStatuses},
      {"/containerd.services.content.v1.Content/Abort", Kind::kAbort},
      {"/containerd.services.content.v1.Content/Write", Kind::kWrite},
      {"/grpc.health.v1.Health/Check", Kind::kHealthCheck},
  };
  auto it = kinds->find(path);
  return it == kinds->end() ? Kind::kUnknown : it->second;
}

void AppendPrefix(size_t length, std::string* out) {
  char prefix[kPrefixBytes] = {
      0, static_cast<char>(length >> 24), static_cast<char>(length >> 16),
      static_cast<char>(length >> 8), static_cast<char>(length)};
  out->append(prefix, kPrefixBytes);
}

// grpc-message is percent-encoded outside printable ASCII (gRPC's HTTP/2
// protocol document).
std::string PercentEncode(absl::string_view message) {
  std::string out;
  for (unsigned char c : message) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

nghttp2_nv Header(absl::string_view name, absl::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
                    name.size(), value.size(), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

// One HTTP/2 stream, that is one gRPC call. The loop thread owns everything
// but the inbox block; a worker thread holds a reference and reaches the
// loop through H2Server::Post.
struct Call {
  // Loop thread only.
  Connection* conn = nullptr;
  int32_t stream_id = 0;
  std::string path;
  Kind kind = Kind::kUnknown;
  std::string framing;  // request bytes not yet a message
  // Messages of a non-Write call; complete (the request ended) before a
  // worker reads them.
  std::vector<std::string> requests;
  bool request_ended = false;
  bool response_started = false;
  bool finishing = false;  // trailers follow `pending`
  bool done = false;       // trailers submitted
  bool deferred = false;   // nghttp2 waits for resume_data
  bool closed = false;     // the stream is gone
  grpc::Status final_status;
  // Response bytes not handed to nghttp2 yet. Shared with the
  // connection's output queue while in-place DATA frames refer to it.
  std::shared_ptr<std::string> pending = std::make_shared<std::string>();
  size_t pending_pos = 0;
  ReadRange read;           // Read calls: what remains to send
  bool in_place = false;    // a large Read: DATA frames sent from `pending`
  size_t in_place_pos = 0;  // where the frame SendData queues starts

  // Shared with the Write stream's thread.
  absl::Mutex mu;
  std::deque<std::string> inbox ABSL_GUARDED_BY(mu);
  size_t inbox_bytes ABSL_GUARDED_BY(mu) = 0;
  bool inbox_ended ABSL_GUARDED_BY(mu) = false;
  std::atomic<bool> cancelled{false};
};

// One client connection and its nghttp2 session. Loop thread only.
class Connection {
 public:
  Connection(H2Server* server, int fd) : server_(server), fd_(fd) {}
  ~Connection();

  bool Init();
  void OnEvent(uint32_t events);
  // Serializes what nghttp2 has queued and writes it.
  void Flush();
  bool dead() const { return dead_; }
  void Kill() { dead_ = true; }
  void GoAway();
  void CancelAll();

  // Responses, for loop code and for actions a worker posted.
  void SendMessage(Call* call, std::string message);
  void Finish(Call* call, const grpc::Status& status);

 private:
  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame,
                            void* self);
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame,
                      const uint8_t* name, size_t namelen, const uint8_t* value,
                      size_t valuelen, uint8_t flags, void* self);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame,
                         void* self);
  static int OnDataChunk(nghttp2_session*, uint8_t flags, int32_t stream_id,
                         const uint8_t* data, size_t len, void* self);
  static int OnStreamClose(nghttp2_session*, int32_t stream_id,
                           uint32_t error_code, void* self);
  static int OnFrameSend(nghttp2_session*, const nghttp2_frame* frame,
                         void* self);
  static ssize_t DataLength(nghttp2_session*, uint8_t frame_type,
                            int32_t stream_id, int32_t connection_window,
                            int32_t stream_window, uint32_t max_frame,
                            void* self);
  static ssize_t ReadData(nghttp2_session*, int32_t stream_id, uint8_t* buf,
                          size_t length, uint32_t* data_flags,
                          nghttp2_data_source* source, void* self);
  static int SendData(nghttp2_session*, nghttp2_frame* frame,
                      const uint8_t* framehd, size_t length,
                      nghttp2_data_source* source, void* self);

  Call* Find(int32_t stream_id);
  void OnReadable();
  void StartCall(Call* call);
  void OnRequestMessage(Call* call, std::string message);
  void OnRequestEnded(Call* call);
  void RunInline(Call* call);
  void RunOnWorker(Call* call);
  void StartWriteWorker(Call* call);
  // Ends `call` with RESOURCE_EXHAUSTED: no thread left for it.
  void RefuseBusy(Call* call);
  void StartResponse(Call* call);
  // Output: copies of what nghttp2 serialized, and in-place Read bytes.
  void QueueCopy(const char* data, size_t n);
  void QueueShared(std::shared_ptr<const std::string> buf, size_t pos,
                   size_t n);
  void Consume(size_t n);
  // Puts the next Read chunk in call->pending; false at the end.
  bool NextReadChunk(Call* call);
  void Resume(Call* call);
  void MarkClosed(Call* call);

  H2Server* const server_;
  const int fd_;
  nghttp2_session* session_ = nullptr;
  bool dead_ = false;
  bool want_out_ = false;
  // Bytes waiting for the socket, in order; each piece keeps its buffer
  // alive. Copied bytes go into copy_.
  struct OutPiece {
    std::shared_ptr<const std::string> buf;
    size_t pos;
    size_t len;
  };
  std::deque<OutPiece> outq_;
  size_t outq_bytes_ = 0;
  std::shared_ptr<std::string> copy_ = std::make_shared<std::string>();
  absl::flat_hash_map<int32_t, std::shared_ptr<Call>> calls_;
};

namespace {

// A Write call's stream, as ContentService::WriteOver sees it, on the
// call's own thread.
class WorkerDuplex final
    : public DuplexStream<cv1::WriteContentRequest, cv1::WriteContentResponse> {
 public:
  WorkerDuplex(std::shared_ptr<Call> call,
               absl::AnyInvocable<void(absl::AnyInvocable<void()>)> post)
      : call_(std::move(call)), post_(std::move(post)) {}

  bool Read(cv1::WriteContentRequest* request) override {
    std::string message;
    {
      absl::MutexLock lock(&call_->mu);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(call_->mu) {
        return !call_->inbox.empty() || call_->inbox_ended ||
               call_->cancelled.load();
      };
      call_->mu.Await(absl::Condition(&ready));
      if (call_->cancelled.load() || call_->inbox.empty()) return false;
      message = std::move(call_->inbox.front());
      call_->inbox.pop_front();
      call_->inbox_bytes -= message.size();
    }
    if (!request->ParseFromString(message)) {
      malformed_ = true;
      return false;
    }
    return true;
  }

  bool Write(const cv1::WriteContentResponse& reply) override {
    if (call_->cancelled.load()) return false;
    Send(reply.SerializeAsString());
    return true;
  }

  void Send(std::string message) {
    std::shared_ptr<Call> call = call_;
    post_([call, message = std::move(message)]() mutable {
      if (!call->closed)
        call->conn->SendMessage(call.get(), std::move(message));
    });
  }

  void Finish(grpc::Status status) {
    if (malformed_) {
      status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "malformed WriteContentRequest");
    }
    std::shared_ptr<Call> call = call_;
    post_([call, status = std::move(status)] {
      if (!call->closed) call->conn->Finish(call.get(), status);
    });
  }

 private:
  std::shared_ptr<Call> call_;
  absl::AnyInvocable<void(absl::AnyInvocable<void()>)> post_;
  bool malformed_ = false;
};

// List's replies, sent as they come.
class WorkerReplies final : public ReplyStream<cv1::ListContentResponse> {
 public:
  explicit WorkerReplies(std::function<bool(std::string)> send)
      : send_(std::move(send)) {}
  bool Write(const cv1::ListContentResponse& reply) override {
    return send_(reply.SerializeAsString());
  }

 private:
  std::function<bool(std::string)> send_;
};

template <typename Request>
bool ParseOne(const std::vector<std::string>& messages, Request* out,
              grpc::Status* error) {
  if (messages.size() != 1) {
    *error = grpc::Status(
        grpc::StatusCode::INTERNAL,
        absl::StrCat("a unary call takes one message, got ", messages.size()));
    return false;
  }
  if (!out->ParseFromString(messages[0])) {
    *error =
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     absl::StrCat("malformed ", Request::descriptor()->name()));
    return false;
  }
  return true;
}

// Runs one unary RPC of `service` on the current thread: parse, call,
// serialize. `reply` is set when the status is OK.
template <typename Request, typename Reply, typename Method>
grpc::Status Unary(ContentService& service, Method method,
                   const std::vector<std::string>& messages,
                   std::string* reply) {
  Request req;
  Reply resp;
  grpc::Status error;
  if (!ParseOne(messages, &req, &error)) return error;
  grpc::Status st = (service.*method)(nullptr, &req, &resp);
  if (st.ok()) *reply = resp.SerializeAsString();
  return st;
}

}  // namespace

Connection::~Connection() {
  if (session_ != nullptr) nghttp2_session_del(session_);
  close(fd_);
}

bool Connection::Init() {
  nghttp2_session_callbacks* cb;
  if (nghttp2_session_callbacks_new(&cb) != 0) return false;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, OnFrameSend);
  nghttp2_session_callbacks_set_data_source_read_length_callback(cb,
                                                                 DataLength);
  nghttp2_session_callbacks_set_send_data_callback(cb, SendData);
  int rv = nghttp2_session_server_new(&session_, cb, this);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) return false;
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kMaxConcurrentStreams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
  };
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                              sizeof(settings) / sizeof(settings[0])) != 0 ||
      nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                            kConnectionWindow) != 0) {
    return false;
  }
  Flush();
  return !dead_;
}

void Connection::OnEvent(uint32_t events) {
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable();
  if (!dead_ && (events & EPOLLOUT)) Flush();
}

void Connection::OnReadable() {
  char buf[kReadBytes];
  // A few reads per wake-up, so one busy client cannot starve the others;
  // the level-triggered epoll comes back for the rest.
  for (int i = 0; i < 16 && !dead_; ++i) {
    ssize_t n = read(fd_, buf, sizeof(buf));
    if (n > 0) {
      ssize_t used = nghttp2_session_mem_recv(
          session_, reinterpret_cast<uint8_t*>(buf), static_cast<size_t>(n));
      if (used < 0) {
        LOG_EVERY_T(WARNING, 10)
            << "h2: dropping connection error=" << nghttp2_strerror(used)
            << " (rate limited)";
        dead_ = true;
      }
      // A short read took all there was; epoll says when more comes, which
      // saves a read(2) that would fail with EAGAIN on every request.
      if (static_cast<size_t>(n) < sizeof(buf)) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    dead_ = true;  // End of stream or a socket error.
  }
  if (!dead_) Flush();
}

void Connection::QueueCopy(const char* data, size_t n) {
  if (copy_->size() + n > kCopyBufferBytes && copy_.use_count() > 1) {
    copy_ = std::make_shared<std::string>();  // The old one is queued.
  }
  if (!outq_.empty() && outq_.back().buf == copy_ &&
      outq_.back().pos + outq_.back().len == copy_->size()) {
    outq_.back().len += n;
  } else {
    outq_.push_back(OutPiece{copy_, copy_->size(), n});
  }
  copy_->append(data, n);
  outq_bytes_ += n;
}

void Connection::QueueShared(std::shared_ptr<const std::string> buf, size_t pos,
                             size_t n) {
  if (n == 0) return;
  outq_.push_back(OutPiece{std::move(buf), pos, n});
  outq_bytes_ += n;
}

void Connection::Consume(size_t n) {
  outq_bytes_ -= n;
  while (n > 0) {
    OutPiece& piece = outq_.front();
    size_t used = std::min(n, piece.len);
    piece.pos += used;
    piece.len -= used;
    n -= used;
    if (piece.len == 0) outq_.pop_front();
  }
  if (outq_.empty() && copy_.use_count() == 1) copy_->clear();
}

void Connection::Flush() {
  while (!dead_) {
    while (outq_bytes_ < kGatherBytes) {
      const uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        LOG_EVERY_T(WARNING, 10)
            << "h2: send failed error=" << nghttp2_strerror(n)
            << " (rate limited)";
        dead_ = true;
        return;
      }
      if (n == 0) break;
      QueueCopy(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (outq_bytes_ == 0) break;
    iovec iov[kMaxIov];
    int count = 0;
    for (const OutPiece& piece : outq_) {
      if (count == kMaxIov) break;
      iov[count++] = {const_cast<char*>(piece.buf->data()) + piece.pos,
                      piece.len};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    // MSG_NOSIGNAL: a client that went away is an EPIPE, not a SIGPIPE.
    ssize_t w = sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) break;
    if (w < 0) {
      dead_ = true;
      return;
    }
    Consume(static_cast<size_t>(w));
  }
  bool want_out = outq_bytes_ > 0;
  if (want_out != want_out_) {
    want_out_ = want_out;
    epoll_event ev{};
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.ptr = this;
    epoll_ctl(server_->epoll_fd_, EPOLL_CTL_MOD, fd_, &ev);
  }
  if (!want_out && !nghttp2_session_want_read(session_) &&
      !nghttp2_session_want_write(session_)) {
    dead_ = true;  // Both sides said goodbye.
  }
}

void Connection::GoAway() {
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
  Flush();
}

void Connection::CancelAll() {
  for (auto& [id, call] : calls_) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  }
  Flush();
  // Whatever could not be sent: the connection goes now, and every call
  // with it.
  dead_ = true;
  for (auto& [id, call] : calls_) MarkClosed(call.get());
  absl::MutexLock lock(&server_->calls_mu_);
  server_->open_calls_ -= static_cast<int>(calls_.size());
  calls_.clear();
}

void Connection::MarkClosed(Call* call) {
  call->closed = true;
  absl::MutexLock lock(&call->mu);
  call->cancelled = true;
}

Call* Connection::Find(int32_t stream_id) {
  auto it = calls_.find(stream_id);
  return it == calls_.end() ? nullptr : it->second.get();
}

int Connection::OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame,
                               void* self) {
  auto* conn = static_cast<Connection*>(self);
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;
  }
  auto call = std::make_shared<Call>();
  call->conn = conn;
  call->stream_id = frame->hd.stream_id;
  conn->calls_[call->stream_id] = std::move(call);
  absl::MutexLock lock(&conn->server_->calls_mu_);
  ++conn->server_->open_calls_;
  return 0;
}

int Connection::OnHeader(nghttp2_session*, const nghttp2_frame* frame,
                         const uint8_t* name, size_t namelen,
                         const uint8_t* value, size_t valuelen, uint8_t,
                         void* self) {
  auto* conn = static_cast<Connection*>(self);
  Call* call = conn->Find(frame->hd.stream_id);
  if (call == nullptr || frame->hd.type != NGHTTP2_HEADERS) return 0;
  absl::string_view n(reinterpret_cast<const char*>(name), namelen);
  if (n == ":path" && call->path.empty()) {
    call->path.assign(reinterpret_cast<const char*>(value), valuelen);
  }
  return 0;
}

int Connection::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame,
                            void* self) {
  auto* conn = static_cast<Connection*>(self);
  Call* call = conn->Find(frame->hd.stream_id);
  if (call == nullptr) return 0;
  if (frame->hd.type == NGHTTP2_HEADERS &&
      frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    conn->StartCall(call);
  }
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !call->closed) {
    conn->OnRequestEnded(call);
  }
  return 0;
}

int Connection::OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id,
                            const uint8_t* data, size_t len, void* self) {
  auto* conn = static_cast<Connection*>(self);
  Call* call = conn->Find(stream_id);
  if (call == nullptr || call->done) return 0;  // Late data: ignored.
  call->framing.append(reinterpret_cast<const char*>(data), len);
  // Split off every whole message.
  while (call->framing.size() >= kPrefixBytes && !call->done) {
    const auto* p = reinterpret_cast<const uint8_t*>(call->framing.data());
    size_t length = (size_t{p[1]} << 24) | (size_t{p[2]} << 16) |
                    (size_t{p[3]} << 8) | size_t{p[4]};
    if (p[0] != 0) {
      conn->Finish(call, grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                      "compressed messages are not supported"));
      break;
    }
    if (length > static_cast<size_t>(kMaxMessageBytes)) {
      conn->Finish(call,
                   grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                absl::StrCat("message of ", length,
                                             " bytes exceeds the limit of ",
                                             kMaxMessageBytes)));
      break;
    }
    if (call->framing.size() < kPrefixBytes + length) break;
    std::string message = call->framing.substr(kPrefixBytes, length);
    call->framing.erase(0, kPrefixBytes + length);
    conn->OnRequestMessage(call, std::move(message));
  }
  return 0;
}

int Connection::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t,
                              void* self) {
  auto* conn = static_cast<Connection*>(self);
  auto it = conn->calls_.find(stream_id);
  if (it == conn->calls_.end()) return 0;
  conn->MarkClosed(it->second.get());
  conn->calls_.erase(it);
  absl::MutexLock lock(&conn->server_->calls_mu_);
  --conn->server_->open_calls_;
  return 0;
}

int Connection::OnFrameSend(nghttp2_session* session,
                            const nghttp2_frame* frame, void* self) {
  auto* conn = static_cast<Connection*>(self);
  if (frame->hd.type != NGHTTP2_HEADERS ||
      !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    return 0;
  }
  // The reply is complete while the client still sends: tell it to stop,
  // as gRPC servers do.
  Call* call = conn->Find(frame->hd.stream_id);
  if (call != nullptr && !call->request_ended) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, call->stream_id,
                              NGHTTP2_NO_ERROR);
  }
  return 0;
}

void Connection::StartCall(Call* call) {
  call->kind = KindOf(call->path);
  if (call->kind == Kind::kUnknown) {
    VLOG(1) << "h2: unknown method path=" << call->path.substr(0, 200);
    Finish(call, grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                              absl::StrCat("unknown method ",
                                           call->path.substr(0, 200))));
    return;
  }
  if (call->kind == Kind::kWrite) StartWriteWorker(call);
}

void Connection::OnRequestMessage(Call* call, std::string message) {
  if (call->kind != Kind::kWrite) {
    if (!call->requests.empty()) {
      Finish(call, grpc::Status(grpc::StatusCode::INTERNAL,
                                "a unary call takes one message"));
      return;
    }
    call->requests.push_back(std::move(message));
    return;
  }
  bool overflow;
  {
    absl::MutexLock lock(&call->mu);
    call->inbox_bytes += message.size();
    call->inbox.push_back(std::move(message));
    overflow = call->inbox_bytes > kMaxInboxBytes;
  }
  if (overflow) {
    LOG_EVERY_T(WARNING, 10) << "h2: write stream sent " << kMaxInboxBytes
                             << " bytes without waiting for replies; "
                                "resetting it (rate limited)";
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, call->stream_id,
                              NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

void Connection::OnRequestEnded(Call* call) {
  call->request_ended = true;
  if (call->done) return;
  switch (call->kind) {
    case Kind::kUnknown:
      return;
    case Kind::kWrite: {
      absl::MutexLock lock(&call->mu);
      call->inbox_ended = true;
      return;
    }
    case Kind::kInfo:
    case Kind::kRead:
    case Kind::kHealthCheck:
      RunInline(call);
      return;
    default:
      RunOnWorker(call);
      return;
  }
}

void Connection::RunInline(Call* call) {
  ContentService& service = server_->service_;
  std::string reply;
  grpc::Status st;
  switch (call->kind) {
    case Kind::kInfo:
      st = Unary<cv1::InfoRequest, cv1::InfoResponse>(
          service, &ContentService::Info, call->requests, &reply);
      break;
    case Kind::kHealthCheck: {
      health::HealthCheckRequest req;
      if (!ParseOne(call->requests, &req, &st)) break;
      if (!req.service().empty() &&
          req.service() != "containerd.services.content.v1.Content") {
        st = grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("unknown service ", req.service()));
        break;
      }
      health::HealthCheckResponse resp;
      resp.set_status(server_->serving_
                          ? health::HealthCheckResponse::SERVING
                          : health::HealthCheckResponse::NOT_SERVING);
      reply = resp.SerializeAsString();
      break;
    }
    case Kind::kRead: {
      // TODO: the blob is opened and read on the loop thread, so a disk
      // that stalls one read stalls every call on the socket; a reader
      // thread for blobs not in the page cache (mincore) would isolate it.
      cv1::ReadContentRequest req;
      if (!ParseOne(call->requests, &req, &st)) break;
      st = service.OpenRead(req, &call->read);
      if (st.ok()) {
        if (call->read.length == 0) break;  // Nothing to send: just OK.
        call->in_place = call->read.length >= kInPlaceReadBytes;
        StartResponse(call);
        return;
      }
      break;
    }
    default:
      LOG(DFATAL) << "h2: not an inline call path=" << call->path;
      return;
  }
  if (st.ok() && call->kind != Kind::kRead) SendMessage(call, std::move(reply));
  Finish(call, st);
}

void Connection::RunOnWorker(Call* call) {
  std::shared_ptr<Call> ref = calls_[call->stream_id];
  H2Server* server = server_;
  bool spawned = server_->SpawnWorker([server, ref] {
    ContentService& service = server->service_;
    std::string reply;
    grpc::Status st;
    bool streamed = false;
    switch (ref->kind) {
      case Kind::kUpdate:
        st = Unary<cv1::UpdateRequest, cv1::UpdateResponse>(
            service, &ContentService::Update, ref->requests, &reply);
        break;
      case Kind::kDelete:
        st = Unary<cv1::DeleteContentRequest, ::google::protobuf::Empty>(
            service, &ContentService::Delete, ref->requests, &reply);
        break;
      case Kind::kStatus:
        st = Unary<cv1::StatusRequest, cv1::StatusResponse>(
            service, &ContentService::Status, ref->requests, &reply);
        break;
      case Kind::kListStatuses:
        st = Unary<cv1::ListStatusesRequest, cv1::ListStatusesResponse>(
            service, &ContentService::ListStatuses, ref->requests, &reply);
        break;
      case Kind::kAbort:
        st = Unary<cv1::AbortRequest, ::google::protobuf::Empty>(
            service, &ContentService::Abort, ref->requests, &reply);
        break;
      case Kind::kList: {
        streamed = true;
        cv1::ListContentRequest req;
        if (!ParseOne(ref->requests, &req, &st)) break;
        WorkerReplies out([server, ref](std::string message) {
          if (ref->cancelled.load()) return false;
          server->Post([ref, message = std::move(message)]() mutable {
            if (!ref->closed)
              ref->conn->SendMessage(ref.get(), std::move(message));
          });
          return true;
        });
        st = service.ListTo(req, out);
        break;
      }
      default:
        LOG(DFATAL) << "h2: not a worker call path=" << ref->path;
        return;
    }
    server->Post([ref, st, reply = std::move(reply), streamed]() mutable {
      if (ref->closed) return;
      if (st.ok() && !streamed) {
        ref->conn->SendMessage(ref.get(), std::move(reply));
      }
      ref->conn->Finish(ref.get(), st);
    });
  });
  if (!spawned) RefuseBusy(call);
}

void Connection::RefuseBusy(Call* call) {
  Finish(call, grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "too many calls in progress on this socket"));
}

void Connection::StartWriteWorker(Call* call) {
  std::shared_ptr<Call> ref = calls_[call->stream_id];
  H2Server* server = server_;
  bool spawned = server_->SpawnWorker([server, ref] {
    WorkerDuplex stream(ref, [server](absl::AnyInvocable<void()> fn) {
      server->Post(std::move(fn));
    });
    grpc::Status st = server->service_.WriteOver(stream);
    stream.Finish(std::move(st));
  });
  if (!spawned) RefuseBusy(call);
}

void Connection::StartResponse(Call* call) {
  if (call->response_started) return;
  call->response_started = true;
  nghttp2_nv headers[] = {Header(":status", "200"),
                          Header("content-type", "application/grpc")};
  nghttp2_data_provider provider;
  provider.source.ptr = call;
  provider.read_callback = ReadData;
  int rv =
      nghttp2_submit_response(session_, call->stream_id, headers, 2, &provider);
  if (rv != 0) {
    LOG_EVERY_T(WARNING, 10)
        << "h2: cannot start a response error=" << nghttp2_strerror(rv)
        << " (rate limited)";
  }
}

void Connection::SendMessage(Call* call, std::string message) {
  if (call->done) return;
  StartResponse(call);
  AppendPrefix(message.size(), call->pending.get());
  call->pending->append(message);
  Resume(call);
}

void Connection::Finish(Call* call, const grpc::Status& status) {
  if (call->done || call->finishing) return;
  if (!call->response_started) {
    // Trailers-only: one HEADERS frame that ends the stream.
    call->done = true;
    std::string code = absl::StrCat(static_cast<int>(status.error_code()));
    std::string message = PercentEncode(status.error_message());
    nghttp2_nv headers[] = {
        Header(":status", "200"), Header("content-type", "application/grpc"),
        Header("grpc-status", code), Header("grpc-message", message)};
    nghttp2_submit_response(session_, call->stream_id, headers,
                            message.empty() ? 3 : 4, nullptr);
    return;
  }
  call->finishing = true;
  call->final_status = status;
  Resume(call);
}

void Connection::Resume(Call* call) {
  if (call->deferred) {
    call->deferred = false;
    nghttp2_session_resume_data(session_, call->stream_id);
  }
}

bool Connection::NextReadChunk(Call* call) {
  ReadRange& r = call->read;
  if (r.length == 0) return false;
  size_t want = static_cast<size_t>(
      std::min<int64_t>(r.length, static_cast<int64_t>(kReadChunkBytes)));
  std::string& chunk = *call->pending;
  chunk.resize(kChunkHeadroom + want);
  call->pending_pos = 0;
  absl::StatusOr<size_t> got =
      r.reader->ReadAt(r.offset, chunk.data() + kChunkHeadroom, want);
  if (!got.ok()) {
    LOG_EVERY_T(WARNING, 10)
        << "h2: read failed error=" << got.status() << " (rate limited)";
    chunk.clear();
    call->finishing = true;
    call->final_status = grpc::Status(grpc::StatusCode::INTERNAL,
                                      std::string(got.status().message()));
    return false;
  }
  if (*got == 0) {  // Shorter than its size: truncated underneath us.
    chunk.clear();
    r.length = 0;
    return false;
  }
  // Header right before the data: prefix, then the chunk's field tags.
  std::string head = EncodeChunkHeader(r.offset, *got);
  std::string framed;
  AppendPrefix(head.size() + *got, &framed);
  framed.append(head);
  call->pending_pos = kChunkHeadroom - framed.size();
  std::memcpy(chunk.data() + call->pending_pos, framed.data(), framed.size());
  chunk.resize(kChunkHeadroom + *got);
  r.offset += static_cast<int64_t>(*got);
  r.length -= static_cast<int64_t>(*got);
  return true;
}

ssize_t Connection::DataLength(nghttp2_session*, uint8_t, int32_t,
                               int32_t connection_window, int32_t stream_window,
                               uint32_t max_frame, void*) {
  // DATA frames as large as the client accepts (nghttp2 stops at 16 KiB
  // otherwise): fewer frames per MiB for clients that allow more. Go's gRPC
  // client, containerd's, allows 16 KiB.
  return std::min<ssize_t>(
      {connection_window, stream_window, static_cast<ssize_t>(max_frame)});
}

ssize_t Connection::ReadData(nghttp2_session* session, int32_t stream_id,
                             uint8_t* buf, size_t length, uint32_t* data_flags,
                             nghttp2_data_source* source, void* self) {
  auto* conn = static_cast<Connection*>(self);
  auto* call = static_cast<Call*>(source->ptr);
  if (call->pending_pos == call->pending->size()) {
    if (call->pending.use_count() > 1) {
      // Queued in-place frames still refer to it: a new buffer.
      call->pending = std::make_shared<std::string>();
    } else {
      call->pending->clear();
    }
    call->pending_pos = 0;
    if (call->kind == Kind::kRead && !call->finishing) {
      conn->NextReadChunk(call);
    }
  }
  size_t n = std::min(length, call->pending->size() - call->pending_pos);
  if (call->in_place && n > 0) {
    // SendData queues these bytes where they are, before nghttp2 asks for
    // the next frame.
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    call->in_place_pos = call->pending_pos;
  } else {
    std::memcpy(buf, call->pending->data() + call->pending_pos, n);
  }
  call->pending_pos += n;
  const bool drained = call->pending_pos == call->pending->size();
  if (drained && call->kind == Kind::kRead && !call->finishing &&
      call->read.length == 0) {
    call->finishing = true;  // The last chunk is out: OK follows at once.
    call->final_status = grpc::Status::OK;
  }
  if (drained && call->finishing) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    call->done = true;
    const grpc::Status& st = call->final_status;
    std::string code = absl::StrCat(static_cast<int>(st.error_code()));
    std::string message = PercentEncode(st.error_message());
    nghttp2_nv trailers[] = {Header("grpc-status", code),
                             Header("grpc-message", message)};
    nghttp2_submit_trailer(session, stream_id, trailers,
                           message.empty() ? 1 : 2);
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    call->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

int Connection::SendData(nghttp2_session*, nghttp2_frame* frame,
                         const uint8_t* framehd, size_t length,
                         nghttp2_data_source* source, void* self) {
  auto* conn = static_cast<Connection*>(self);
  auto* call = static_cast<Call*>(source->ptr);
  // No padding is ever chosen, so a frame is its header and the bytes.
  DCHECK_EQ(frame->data.padlen, 0u);
  constexpr size_t kFrameHeaderBytes = 9;
  conn->QueueCopy(reinterpret_cast<const char*>(framehd), kFrameHeaderBytes);
  conn->QueueShared(call->pending, call->in_place_pos, length);
  return 0;
}

}  // namespace h2_internal

using h2_internal::Connection;

absl::StatusOr<std::unique_ptr<H2Server>> H2Server::Start(
    const std::string& socket_path, ContentService* service,
    int max_running_calls) {
  std::unique_ptr<H2Server> s(new H2Server(service, max_running_calls));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path too long: ", socket_path));
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  s->listen_fd_ =
      socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->listen_fd_ < 0) return ErrnoToStatus(errno, "socket", socket_path);
  if (bind(s->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) !=
          0 ||
      listen(s->listen_fd_, 128) != 0) {
    return ErrnoToStatus(errno, "bind/listen", socket_path);
  }
  s->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  s->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->epoll_fd_ < 0 || s->wake_fd_ < 0) {
    return ErrnoToStatus(errno, "epoll/eventfd", socket_path);
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = h2_internal::kListenTag;
  epoll_ctl(s->epoll_fd_, EPOLL_CTL_ADD, s->listen_fd_, &ev);
  ev.data.u64 = h2_internal::kWakeTag;
  epoll_ctl(s->epoll_fd_, EPOLL_CTL_ADD, s->wake_fd_, &ev);
  s->loop_ = std::thread([p = s.get()] { p->Loop(); });
  return s;
}

H2Server::~H2Server() {
  Shutdown(absl::ZeroDuration());
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (listen_fd_ >= 0) close(listen_fd_);
}

void H2Server::Loop() {
  pthread_setname_np(pthread_self(), "shoal-h2");
  epoll_event events[64];
  while (!quit_) {
    int n = epoll_wait(epoll_fd_, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      PLOG(ERROR) << "h2: epoll_wait failed; the content socket stops";
      break;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t tag = events[i].data.u64;
      if (tag == h2_internal::kListenTag) {
        Accept();
      } else if (tag == h2_internal::kWakeTag) {
        RunPosted();
      } else {
        auto* conn = static_cast<Connection*>(events[i].data.ptr);
        if (connections_.contains(conn)) conn->OnEvent(events[i].events);
      }
    }
    std::vector<Connection*> dead;
    for (Connection* conn : connections_) {
      if (conn->dead()) dead.push_back(conn);
    }
    for (Connection* conn : dead) DestroyConnection(conn);
  }
  // Stopped: nothing posted from now on runs.
  {
    absl::MutexLock lock(&post_mu_);
    loop_stopped_ = true;
    posted_.clear();
  }
  while (!connections_.empty()) DestroyConnection(*connections_.begin());
}

void H2Server::Accept() {
  while (!draining_) {
    int fd =
        accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        LOG_EVERY_T(WARNING, 10)
            << "h2: accept failed error=" << strerror(errno)
            << " (rate limited)";
      }
      return;
    }
    auto conn = std::make_unique<Connection>(this, fd);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = conn.get();
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) continue;
    Connection* raw = conn.release();
    connections_.insert(raw);
    if (!raw->Init()) raw->Kill();
    VLOG(1) << "h2: connection accepted fd=" << fd;
  }
}

void H2Server::DestroyConnection(Connection* conn) {
  conn->CancelAll();  // Marks every call closed, so posts find them gone.
  connections_.erase(conn);
  delete conn;
}

void H2Server::Wake() {
  uint64_t one = 1;
  ssize_t ignored = write(wake_fd_, &one, sizeof(one));
  (void)ignored;
}

void H2Server::Post(absl::AnyInvocable<void()> fn) {
  bool first;
  {
    absl::MutexLock lock(&post_mu_);
    if (loop_stopped_) return;
    first = posted_.empty();
    posted_.push_back(std::move(fn));
  }
  if (first) Wake();
}

void H2Server::RunPosted() {
  uint64_t count;
  ssize_t ignored = read(wake_fd_, &count, sizeof(count));
  (void)ignored;
  std::vector<absl::AnyInvocable<void()>> batch;
  {
    absl::MutexLock lock(&post_mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
  for (Connection* conn : connections_) {
    if (!conn->dead()) conn->Flush();
  }
}

bool H2Server::SpawnWorker(absl::AnyInvocable<void()> body) {
  absl::MutexLock lock(&workers_mu_);
  if (running_workers_ >= max_running_calls_) {
    LOG_EVERY_T(WARNING, 10) << "h2: refusing a call: " << running_workers_
                             << " calls already running (rate limited)";
    return false;
  }
  uint64_t id = next_worker_++;
  ++running_workers_;
  workers_[id] = std::thread([this, id, body = std::move(body)]() mutable {
    pthread_setname_np(pthread_self(), "shoal-h2-call");
    body();
    body = nullptr;  // Drops the call's references on this thread.
    {
      absl::MutexLock lock(&workers_mu_);
      --running_workers_;
    }
    // The loop joins this thread; after the loop stops, Shutdown does.
    Post([this, id] {
      std::thread done;
      {
        absl::MutexLock lock(&workers_mu_);
        auto it = workers_.find(id);
        if (it == workers_.end()) return;
        done = std::move(it->second);
        workers_.erase(it);
      }
      done.join();
    });
  });
  return true;
}

void H2Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  serving_ = false;
  if (!loop_.joinable()) return;  // Start() failed before the loop ran.
  Post([this] {
    draining_ = true;
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    close(listen_fd_);  // New connections are refused from now on.
    listen_fd_ = -1;
    for (Connection* conn : connections_) conn->GoAway();
  });
  {
    absl::MutexLock lock(&calls_mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(calls_mu_) {
      return open_calls_ == 0;
    };
    calls_mu_.AwaitWithTimeout(absl::Condition(&idle), grace);
  }
  // Cancel what is left and close every connection: Write streams see the
  // end of their messages and return.
  Post([this] {
    for (Connection* conn : connections_) conn->CancelAll();
  });
  {
    absl::MutexLock lock(&workers_mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(workers_mu_) {
      return running_workers_ == 0;
    };
    workers_mu_.Await(absl::Condition(&idle));
  }
  Post([this] { quit_ = true; });
  loop_.join();
  absl::flat_hash_map<uint64_t, std::thread> left;
  {
    absl::MutexLock lock(&workers_mu_);
    left.swap(workers_);
  }
  for (auto& [id, thread] : left) thread.join();
}

}  // namespace shoal::plugin
