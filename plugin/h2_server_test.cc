// H2Server's own behaviour, through real gRPC C++ clients (and one raw
// socket) on a unix socket: what content_service_test does not reach
// because both transports must agree on it there.
#include "plugin/h2_server.h"

#include <gflags/gflags.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "plugin/file_util.h"
#include "plugin/sha256.h"
#include "plugin/store.h"

namespace shoal::plugin {
namespace {

namespace cv1 = ::containerd::services::content::v1;
namespace health = ::grpc::health::v1;

constexpr char kInfo[] = "/containerd.services.content.v1.Content/Info";

grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

class H2ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-h2-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/h2.sock";
    auto store = BlobStore::Open(dir_ + "/root");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    service_ = std::make_unique<ContentService>(store_.get());
    auto server = H2Server::Start(socket_, service_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(-1);
    args.SetMaxReceiveMessageSize(-1);
    channel_ =
        grpc::CreateCustomChannel(absl::StrCat("unix:", socket_),
                                  grpc::InsecureChannelCredentials(), args);
    stub_ = cv1::Content::NewStub(channel_);
  }

  void TearDown() override {
    server_.reset();
    service_.reset();
    store_.reset();
    RemoveTree(dir_).IgnoreError();
  }

  // A unary call of `method` with `request` as its raw message.
  grpc::Status RawUnary(const std::string& method, const std::string& request,
                        std::string* reply = nullptr) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    grpc::ByteBuffer req = Bytes(request), resp;
    absl::Mutex mu;
    bool done = false;
    grpc::Status result;
    stub.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp,
                   [&](grpc::Status st) {
                     absl::MutexLock lock(&mu);
                     result = std::move(st);
                     done = true;
                   });
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&done));
    if (result.ok() && reply != nullptr) {
      std::vector<grpc::Slice> slices;
      EXPECT_TRUE(resp.Dump(&slices).ok());
      reply->clear();
      for (const auto& s : slices) {
        reply->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
    return result;
  }

  // A call of `method` that sends every message of `requests`, then ends.
  grpc::Status RawStreaming(const std::string& method,
                            const std::vector<std::string>& requests) {
    grpc::GenericStub stub(channel_);
    grpc::CompletionQueue cq;
    grpc::ClientContext ctx;
    auto call = stub.PrepareCall(&ctx, method, &cq);
    void* tag;
    bool ok;
    call->StartCall(reinterpret_cast<void*>(1));
    EXPECT_TRUE(cq.Next(&tag, &ok));
    for (const std::string& r : requests) {
      grpc::ByteBuffer bb = Bytes(r);
      call->Write(bb, reinterpret_cast<void*>(2));
      EXPECT_TRUE(cq.Next(&tag, &ok));
      if (!ok) break;
    }
    call->WritesDone(reinterpret_cast<void*>(3));
    EXPECT_TRUE(cq.Next(&tag, &ok));
    grpc::Status st;
    call->Finish(&st, reinterpret_cast<void*>(4));
    EXPECT_TRUE(cq.Next(&tag, &ok));
    return st;
  }

  std::string Put(const std::string& ref, const std::string& data) {
    auto w = store_->OpenIngest(ref, static_cast<int64_t>(data.size()));
    EXPECT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE((*w)->Append(data).ok());
    auto info = (*w)->Commit(static_cast<int64_t>(data.size()), "");
    EXPECT_TRUE(info.ok()) << info.status();
    return info->digest;
  }

  // Whether an Info call on the test's channel still succeeds.
  bool StillServes() {
    grpc::ClientContext ctx;
    cv1::InfoRequest req;
    req.set_digest(Put("t/alive", "still serving"));
    cv1::InfoResponse resp;
    return stub_->Info(&ctx, req, &resp).ok();
  }

  health::HealthCheckResponse::ServingStatus Health(const std::string& service,
                                                    grpc::Status* st) {
    auto stub = health::Health::NewStub(channel_);
    grpc::ClientContext ctx;
    health::HealthCheckRequest req;
    req.set_service(service);
    health::HealthCheckResponse resp;
    *st = stub->Check(&ctx, req, &resp);
    return resp.status();
  }

  std::string dir_, socket_;
  std::unique_ptr<BlobStore> store_;
  std::unique_ptr<ContentService> service_;
  std::unique_ptr<H2Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<cv1::Content::Stub> stub_;
};

TEST_F(H2ServerTest, UnknownMethodsAreUnimplemented) {
  grpc::Status st =
      RawUnary("/containerd.services.content.v1.Content/Nope", "");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(st.error_message().find("Nope"), std::string::npos);
  st = RawUnary("/other.Service/Info", "");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  st = RawUnary("/grpc.health.v1.Health/Watch", "");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(H2ServerTest, HealthCheckFollowsServingState) {
  grpc::Status st;
  EXPECT_EQ(Health("", &st), health::HealthCheckResponse::SERVING);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(Health("containerd.services.content.v1.Content", &st),
            health::HealthCheckResponse::SERVING);
  EXPECT_TRUE(st.ok());
  Health("no.such.Service", &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  server_->SetServing(false);
  EXPECT_EQ(Health("", &st), health::HealthCheckResponse::NOT_SERVING);
  EXPECT_TRUE(st.ok());
}

TEST_F(H2ServerTest, MalformedMessagesAreInvalidArgument) {
  const std::string garbage = "\xff\xff\xff\xff";
  for (const char* method :
       {kInfo, "/containerd.services.content.v1.Content/Read",
        "/containerd.services.content.v1.Content/Delete",
        "/containerd.services.content.v1.Content/List"}) {
    grpc::Status st = RawUnary(method, garbage);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
  }
  grpc::Status st =
      RawStreaming("/containerd.services.content.v1.Content/Write", {garbage});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(H2ServerTest, UnaryCallsTakeExactlyOneMessage) {
  cv1::InfoRequest req;
  req.set_digest(Sha256Digest(""));
  const std::string one = req.SerializeAsString();
  EXPECT_EQ(RawStreaming(kInfo, {}).error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(RawStreaming(kInfo, {one, one}).error_code(),
            grpc::StatusCode::INTERNAL);
  // One message: an answer (NOT_FOUND: the empty blob is not stored).
  EXPECT_EQ(RawStreaming(kInfo, {one}).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(H2ServerTest, OversizedMessageIsResourceExhausted) {
  cv1::InfoRequest req;
  req.set_digest(std::string((16 << 20) + 1, 'a'));
  grpc::Status st = RawUnary(kInfo, req.SerializeAsString());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(StillServes());  // The connection is still good.
}

TEST_F(H2ServerTest, CompressedMessagesAreUnimplemented) {
  grpc::ClientContext ctx;
  ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
  cv1::InfoRequest req;
  req.set_digest(std::string(4096, 'a'));  // Big enough to be compressed.
  cv1::InfoResponse resp;
  grpc::Status st = stub_->Info(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(H2ServerTest, StatusMessagesArePercentEncoded) {
  // An Update of a field path with '%' and a byte outside printable ASCII:
  // the error message names the path, and must survive the trip.
  cv1::UpdateRequest req;
  req.mutable_info()->set_digest(Put("t/1", "x"));
  req.mutable_update_mask()->add_paths("size%41\xc3\xa9");
  grpc::ClientContext ctx;
  cv1::UpdateResponse resp;
  grpc::Status st = stub_->Update(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("size%41\xc3\xa9"), std::string::npos)
      << st.error_message();
}

TEST_F(H2ServerTest, GarbageConnectionIsDroppedOthersServed) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_.data(), socket_.size());
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_GT(write(fd, junk, sizeof(junk) - 1), 0);
  // The server closes it: read reaches the end (after any GOAWAY bytes)
  // within a deadline.
  bool closed = false;
  char buf[4096];
  for (int i = 0; i < 50 && !closed; ++i) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = read(fd, buf, sizeof(buf));
    closed = n <= 0;
  }
  close(fd);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(StillServes());
}

TEST_F(H2ServerTest, CancelledLargeReadLeavesServerHealthy) {
  std::string data(8 << 20, 'q');
  std::string digest = Put("t/big", data);
  {
    grpc::ClientContext ctx;
    cv1::ReadContentRequest req;
    req.set_digest(digest);
    auto reader = stub_->Read(&ctx, req);
    cv1::ReadContentResponse resp;
    ASSERT_TRUE(reader->Read(&resp));
    ctx.TryCancel();
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  grpc::ClientContext ctx;
  cv1::ReadContentRequest req;
  req.set_digest(digest);
  auto reader = stub_->Read(&ctx, req);
  cv1::ReadContentResponse resp;
  size_t total = 0;
  while (reader->Read(&resp)) total += resp.data().size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(total, data.size());
}

// Reads of 256 KiB and more leave from the chunk read from the file, with
// DATA frames queued in place; several at once on one connection interleave
// their frames, and every byte must still come back where it belongs.
TEST_F(H2ServerTest, LargeReadsSentInPlaceAreByteExact) {
  std::string data(5 * (1 << 20) + 12345, '\0');
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<char>((i * 2654435761u) >> 13);
  }
  std::string digest = Put("t/exact", data);
  struct Range {
    int64_t offset, size;
  };
  // Whole blob, a middle stretch across chunk boundaries, exactly the
  // in-place threshold, just under it, and the tail.
  const std::vector<Range> ranges = {
      {0, 0},
      {(1 << 20) - 7, 3 * (1 << 20) + 99},
      {4096, 256 << 10},
      {17, (256 << 10) - 1},
      {static_cast<int64_t>(data.size()) - 300000, 0}};
  std::vector<std::thread> readers;
  std::vector<std::string> got(ranges.size());
  std::vector<grpc::Status> status(ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    readers.emplace_back([&, i] {
      grpc::ClientContext ctx;
      cv1::ReadContentRequest req;
      req.set_digest(digest);
      req.set_offset(ranges[i].offset);
      req.set_size(ranges[i].size);
      auto reader = stub_->Read(&ctx, req);
      cv1::ReadContentResponse resp;
      int64_t next = ranges[i].offset;
      while (reader->Read(&resp)) {
        EXPECT_EQ(resp.offset(), next);
        next += static_cast<int64_t>(resp.data().size());
        got[i] += resp.data();
      }
      status[i] = reader->Finish();
    });
  }
  for (auto& t : readers) t.join();
  for (size_t i = 0; i < ranges.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(status[i].ok()) << status[i].error_message();
    size_t size = ranges[i].size > 0
                      ? static_cast<size_t>(ranges[i].size)
                      : data.size() - static_cast<size_t>(ranges[i].offset);
    ASSERT_EQ(got[i].size(), size);
    EXPECT_TRUE(got[i] == data.substr(ranges[i].offset, size));
  }
}

// Calls that need a thread of their own are capped: past the cap they are
// refused at once, and the server serves again when one ends.
TEST_F(H2ServerTest, StartOnAnExistingPathFailsCleanly) {
  // The fixture's server holds socket_; a second one must report the
  // clash, not crash while tearing itself down.
  auto second = H2Server::Start(socket_, service_.get());
  EXPECT_FALSE(second.ok());
  EXPECT_TRUE(StillServes());
}

TEST_F(H2ServerTest, CallsPastTheThreadCapAreRefused) {
  server_.reset();
  ASSERT_EQ(unlink(socket_.c_str()), 0);
  auto server = H2Server::Start(socket_, service_.get(), 2);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  // Two Write streams that send nothing hold both threads.
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<
      cv1::WriteContentRequest, cv1::WriteContentResponse>>>
      held;
  for (int i = 0; i < 2; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    held.push_back(stub_->Write(ctxs.back().get()));
    // A STAT answered: the stream's thread runs.
    cv1::WriteContentRequest req;
    req.set_action(cv1::STAT);
    req.set_ref(absl::StrCat("t/held-", i));
    ASSERT_TRUE(held.back()->Write(req));
    cv1::WriteContentResponse resp;
    ASSERT_TRUE(held.back()->Read(&resp));
  }
  {
    grpc::ClientContext ctx;
    cv1::ListStatusesRequest req;
    cv1::ListStatusesResponse resp;
    EXPECT_EQ(stub_->ListStatuses(&ctx, req, &resp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  EXPECT_TRUE(StillServes());  // Info runs on the loop: not capped.
  held[0]->WritesDone();
  EXPECT_TRUE(held[0]->Finish().ok());
  // The thread is counted free once its body returns, which follows the
  // reply; wait for it rather than race it.
  grpc::StatusCode code = grpc::StatusCode::RESOURCE_EXHAUSTED;
  for (absl::Time deadline = absl::Now() + absl::Seconds(10);
       code == grpc::StatusCode::RESOURCE_EXHAUSTED && absl::Now() < deadline;
       absl::SleepFor(absl::Milliseconds(5))) {
    grpc::ClientContext ctx;
    cv1::ListStatusesRequest req;
    cv1::ListStatusesResponse resp;
    code = stub_->ListStatuses(&ctx, req, &resp).error_code();
  }
  EXPECT_EQ(code, grpc::StatusCode::OK);
  held[1]->WritesDone();
  EXPECT_TRUE(held[1]->Finish().ok());
}

TEST_F(H2ServerTest, ConcurrentReadsAndWritesOverManyConnections) {
  std::string data(300 << 10, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  const std::string digest = Put("t/shared", data);
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // A channel of its own, so each thread has its own connection.
      grpc::ChannelArguments args;
      args.SetInt("shoal.test.channel", t);
      auto stub = cv1::Content::NewStub(
          grpc::CreateCustomChannel(absl::StrCat("unix:", socket_),
                                    grpc::InsecureChannelCredentials(), args));
      for (int i = 0; i < 100; ++i) {
        grpc::ClientContext ctx;
        cv1::ReadContentRequest req;
        req.set_digest(digest);
        req.set_offset((i * 32768) % (data.size() - 32768));
        req.set_size(32768);
        auto reader = stub->Read(&ctx, req);
        cv1::ReadContentResponse resp;
        std::string got;
        while (reader->Read(&resp)) got += resp.data();
        if (!reader->Finish().ok() || got != data.substr(req.offset(), 32768)) {
          ++bad;
        }
      }
      // And a write of its own, the way containerd writes.
      std::string mine =
          absl::StrCat("thread ", t, " ", std::string(70000, 'w'));
      grpc::ClientContext ctx;
      auto rw = stub->Write(&ctx);
      cv1::WriteContentRequest req;
      cv1::WriteContentResponse resp;
      req.set_action(cv1::STAT);
      req.set_ref(absl::StrCat("t/w", t));
      req.set_total(static_cast<int64_t>(mine.size()));
      bool ok = rw->Write(req) && rw->Read(&resp);
      req.Clear();
      req.set_action(cv1::COMMIT);
      req.set_data(mine);
      req.set_total(static_cast<int64_t>(mine.size()));
      req.set_expected(Sha256Digest(mine));
      ok = ok && rw->Write(req) && rw->Read(&resp) &&
           resp.digest() == Sha256Digest(mine);
      rw->WritesDone();
      if (!ok || !rw->Finish().ok()) ++bad;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    std::string mine = absl::StrCat("thread ", t, " ", std::string(70000, 'w'));
    EXPECT_TRUE(store_->Info(Sha256Digest(mine)).ok()) << t;
  }
}

TEST_F(H2ServerTest, ShutdownEndsOpenWriteStreamsAndStopsListening) {
  grpc::ClientContext ctx;
  auto rw = stub_->Write(&ctx);
  cv1::WriteContentRequest req;
  req.set_action(cv1::STAT);
  req.set_ref("t/open");
  cv1::WriteContentResponse resp;
  ASSERT_TRUE(rw->Write(req) && rw->Read(&resp));
  server_->Shutdown(absl::Milliseconds(100));  // Returns: the worker ended.
  EXPECT_FALSE(rw->Read(&resp));
  EXPECT_FALSE(rw->Finish().ok());
  // The ref is free again and nothing listens any more.
  auto w = store_->OpenIngest("t/open", 0);
  EXPECT_TRUE(w.ok()) << w.status();
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_.data(), socket_.size());
  EXPECT_NE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);
}

}  // namespace
}  // namespace shoal::plugin
