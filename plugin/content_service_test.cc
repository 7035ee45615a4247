// Tests the content service through its real gRPC API on a unix socket, as
// containerd's proxy client talks to it.
#include "plugin/content_service.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <memory>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "plugin/file_util.h"
#include "plugin/server.h"

namespace shoal::plugin {
namespace {

namespace cv1 = ::containerd::services::content::v1;
using ::testing::HasSubstr;
using WriteStream = grpc::ClientReaderWriter<cv1::WriteContentRequest,
                                             cv1::WriteContentResponse>;

// Every case runs over both transports of the socket (server.h).
class ContentServiceTest : public ::testing::TestWithParam<ContentTransport> {
 protected:
  void SetUp() override {
    // Unix socket paths are limited to 108 bytes; TEST_TMPDIR is long.
    char tmpl[] = "/tmp/shoal-cs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    StartServer();
  }

  void TearDown() override {
    server_.reset();
    RemoveTree(dir_).IgnoreError();
  }

  void StartServer() {
    auto s = ContentServer::Start(dir_ + "/c.sock", dir_ + "/root", nullptr,
                                  GetParam());
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetMaxSendMessageSize(kMaxMessageBytes);
    channel_ =
        grpc::CreateCustomChannel(absl::StrCat("unix:", dir_, "/c.sock"),
                                  grpc::InsecureChannelCredentials(), args);
    stub_ = cv1::Content::NewStub(channel_);
  }

  struct Stream {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<WriteStream> rw;
  };

  Stream OpenWrite() {
    Stream s;
    s.ctx = std::make_unique<grpc::ClientContext>();
    s.rw = stub_->Write(s.ctx.get());
    return s;
  }

  static cv1::WriteContentRequest Msg(cv1::WriteAction action,
                                      const std::string& ref = "",
                                      int64_t total = 0,
                                      const std::string& expected = "",
                                      int64_t offset = 0,
                                      const std::string& data = "") {
    cv1::WriteContentRequest req;
    req.set_action(action);
    req.set_ref(ref);
    req.set_total(total);
    req.set_expected(expected);
    req.set_offset(offset);
    req.set_data(data);
    return req;
  }

  // Sends `req` and returns the reply, or the stream's final status.
  static absl::StatusOr<cv1::WriteContentResponse> Send(
      Stream& s, const cv1::WriteContentRequest& req) {
    cv1::WriteContentResponse resp;
    if (s.rw->Write(req) && s.rw->Read(&resp)) return resp;
    s.rw->WritesDone();
    grpc::Status st = s.rw->Finish();
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        st.error_message());
  }

  // Writes `data` under `ref` the way containerd's pull does and commits.
  void Put(const std::string& ref, const std::string& data) {
    Stream s = OpenWrite();
    ASSERT_TRUE(Send(s, Msg(cv1::STAT, ref, data.size())).ok());
    auto w = Send(s, Msg(cv1::WRITE, "", 0, "", 0, data));
    ASSERT_TRUE(w.ok()) << w.status();
    auto c = Send(
        s, Msg(cv1::COMMIT, "", data.size(), Sha256Digest(data), data.size()));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->digest(), Sha256Digest(data));
    s.rw->WritesDone();
    EXPECT_TRUE(s.rw->Finish().ok());
  }

  // Reads via the Read RPC; returns the chunks.
  absl::StatusOr<std::vector<std::string>> ReadChunks(const std::string& dgst,
                                                      int64_t offset = 0,
                                                      int64_t size = 0) {
    grpc::ClientContext ctx;
    cv1::ReadContentRequest req;
    req.set_digest(dgst);
    req.set_offset(offset);
    req.set_size(size);
    auto reader = stub_->Read(&ctx, req);
    std::vector<std::string> chunks;
    cv1::ReadContentResponse resp;
    int64_t expect_offset = std::max<int64_t>(offset, 0);
    while (reader->Read(&resp)) {
      EXPECT_EQ(resp.offset(), expect_offset);
      expect_offset += resp.data().size();
      chunks.push_back(resp.data());
    }
    grpc::Status st = reader->Finish();
    if (!st.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                          st.error_message());
    }
    return chunks;
  }

  absl::StatusCode InfoCode(const std::string& dgst) {
    grpc::ClientContext ctx;
    cv1::InfoRequest req;
    req.set_digest(dgst);
    cv1::InfoResponse resp;
    return static_cast<absl::StatusCode>(
        stub_->Info(&ctx, req, &resp).error_code());
  }

  std::string dir_;
  std::unique_ptr<ContentServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<cv1::Content::Stub> stub_;
};

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131) >> 3);
  return s;
}

TEST_P(ContentServiceTest, PullSequenceCommitsAndReadsBack) {
  std::string data = Pattern(3 << 20);
  Put("default/1/layer-sha256:x", data);
  grpc::ClientContext ctx;
  cv1::InfoRequest req;
  req.set_digest(Sha256Digest(data));
  cv1::InfoResponse info;
  ASSERT_TRUE(stub_->Info(&ctx, req, &info).ok());
  EXPECT_EQ(info.info().size(), static_cast<int64_t>(data.size()));
  auto chunks = ReadChunks(Sha256Digest(data));
  ASSERT_TRUE(chunks.ok());
  std::string joined;
  for (const auto& c : *chunks) {
    EXPECT_LE(c.size(), kReadChunkBytes);
    joined += c;
  }
  EXPECT_EQ(joined, data);
}

TEST_P(ContentServiceTest, StatRepliesCarryProgress) {
  Stream s = OpenWrite();
  auto first = Send(s, Msg(cv1::STAT, "ns/1/config-sha256:a", 10));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->offset(), 0);
  EXPECT_EQ(first->total(), 10);
  EXPECT_TRUE(first->has_started_at());
  EXPECT_TRUE(first->has_updated_at());
  auto w = Send(s, Msg(cv1::WRITE, "", 0, "", 0, "01234"));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->offset(), 5);
  EXPECT_EQ(w->digest(), Sha256Digest("01234"));
}

TEST_P(ContentServiceTest, FirstStatOfStoredBlobIsOkNotAlreadyExists) {
  Put("ns/1/layer-sha256:a", "stored");
  Stream s = OpenWrite();
  auto st =
      Send(s, Msg(cv1::STAT, "ns/2/layer-sha256:a", 6, Sha256Digest("stored")));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->offset(), 0);
}

TEST_P(ContentServiceTest, CommitOfStoredBlobIsOkWithDigest) {
  Put("ns/1/layer-sha256:a", "stored");
  Stream s = OpenWrite();
  ASSERT_TRUE(Send(s, Msg(cv1::STAT, "ns/2/layer-sha256:a", 6)).ok());
  auto c =
      Send(s, Msg(cv1::COMMIT, "", 6, Sha256Digest("stored"), 0, "stored"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->offset(), 6);
  EXPECT_EQ(c->digest(), Sha256Digest("stored"));
}

TEST_P(ContentServiceTest, EmptyCommitWithStaleOffsetCommitsWhatIsThere) {
  // A stream that filled the ingest, then containerd's COMMIT carrying the
  // offset of its first STAT (0) and no data.
  {
    Stream s = OpenWrite();
    ASSERT_TRUE(Send(s, Msg(cv1::STAT, "ns/1/layer-sha256:f", 4)).ok());
    ASSERT_TRUE(Send(s, Msg(cv1::WRITE, "", 0, "", 0, "full")).ok());
    s.rw->WritesDone();
    s.rw->Finish();
  }
  Stream s = OpenWrite();
  auto st = Send(s, Msg(cv1::STAT, "ns/1/layer-sha256:f", 4));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->offset(), 4);
  auto c = Send(s, Msg(cv1::COMMIT, "", 4, Sha256Digest("full"), 0));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->offset(), 4);
  EXPECT_EQ(InfoCode(Sha256Digest("full")), absl::StatusCode::kOk);
}

TEST_P(ContentServiceTest, WriteAtOffsetZeroRestartsIngest) {
  Stream s = OpenWrite();
  ASSERT_TRUE(Send(s, Msg(cv1::STAT, "r", 0)).ok());
  ASSERT_TRUE(Send(s, Msg(cv1::WRITE, "", 0, "", 0, "garbage")).ok());
  auto w = Send(s, Msg(cv1::WRITE, "", 0, "", 0, "good"));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->offset(), 4);
  auto c = Send(s, Msg(cv1::COMMIT, "", 4, Sha256Digest("good"), 4));
  EXPECT_TRUE(c.ok()) << c.status();
}

TEST_P(ContentServiceTest, WriteAtWrongOffsetIsOutOfRange) {
  Stream s = OpenWrite();
  ASSERT_TRUE(Send(s, Msg(cv1::STAT, "r", 0)).ok());
  ASSERT_TRUE(Send(s, Msg(cv1::WRITE, "", 0, "", 0, "abc")).ok());
  auto w = Send(s, Msg(cv1::WRITE, "", 0, "", 7, "def"));
  EXPECT_EQ(w.status().code(), absl::StatusCode::kOutOfRange);
  // The ingest is unharmed.
  grpc::ClientContext ctx;
  cv1::StatusRequest req;
  req.set_ref("r");
  cv1::StatusResponse resp;
  ASSERT_TRUE(stub_->Status(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status().offset(), 3);
}

TEST_P(ContentServiceTest, NegativeOffsetIsInvalidArgument) {
  Stream s = OpenWrite();
  ASSERT_TRUE(Send(s, Msg(cv1::STAT, "r", 0)).ok());
  auto w = Send(s, Msg(cv1::WRITE, "", 0, "", -5, "x"));
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(ContentServiceTest, CommitWithWrongDigestOrSizeFailsPrecondition) {
  Stream s = OpenWrite();
  ASSERT_TRUE(Send(s, Msg(cv1::STAT, "r", 0)).ok());
  ASSERT_TRUE(Send(s, Msg(cv1::WRITE, "", 0, "", 0, "abc")).ok());
  auto c = Send(s, Msg(cv1::COMMIT, "", 3, Sha256Digest("abd"), 3));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("unexpected commit digest"));
  EXPECT_EQ(InfoCode(Sha256Digest("abd")), absl::StatusCode::kNotFound);
  EXPECT_EQ(InfoCode(Sha256Digest("abc")), absl::StatusCode::kNotFound);

  Stream s2 = OpenWrite();
  ASSERT_TRUE(Send(s2, Msg(cv1::STAT, "r", 0)).ok());
  auto c2 = Send(s2, Msg(cv1::COMMIT, "", 4, Sha256Digest("abc"), 3));
  EXPECT_EQ(c2.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(c2.status().message()),
              HasSubstr("unexpected commit size"));
}

TEST_P(ContentServiceTest, SecondStreamOnRefIsUnavailable) {
  Stream a = OpenWrite();
  ASSERT_TRUE(Send(a, Msg(cv1::STAT, "ns/1/layer", 0)).ok());
  Stream b = OpenWrite();
  EXPECT_EQ(Send(b, Msg(cv1::STAT, "ns/1/layer", 0)).status().code(),
            absl::StatusCode::kUnavailable);
  a.rw->WritesDone();
  a.rw->Finish();
  Stream c = OpenWrite();
  EXPECT_TRUE(Send(c, Msg(cv1::STAT, "ns/1/layer", 0)).ok());
}

TEST_P(ContentServiceTest, ClientDisconnectMidWriteKeepsDataAndFreesRef) {
  {
    Stream s = OpenWrite();
    ASSERT_TRUE(Send(s, Msg(cv1::STAT, "ns/1/big", 100)).ok());
    ASSERT_TRUE(Send(s, Msg(cv1::WRITE, "", 0, "", 0, "0123456789")).ok());
    s.ctx->TryCancel();
  }
  // The server notices the cancel asynchronously; the ref frees up shortly.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  absl::StatusOr<cv1::WriteContentResponse> st;
  Stream s;
  do {
    s = OpenWrite();
    st = Send(s, Msg(cv1::STAT, "ns/1/big", 100));
  } while (absl::IsUnavailable(st.status()) && absl::Now() < deadline);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->offset(), 10);
}

TEST_P(ContentServiceTest, FirstMessageWithoutRefIsInvalidArgument) {
  Stream s = OpenWrite();
  EXPECT_EQ(Send(s, Msg(cv1::STAT)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(ContentServiceTest, BadRefsAreInvalidArgumentAndTouchNothing) {
  for (const std::string& ref :
       {std::string("ns/../../etc"), std::string("a\0b", 3),
        std::string(kMaxRefLength + 1, 'x')}) {
    Stream s = OpenWrite();
    EXPECT_EQ(Send(s, Msg(cv1::STAT, ref)).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  grpc::ClientContext ctx;
  cv1::ListStatusesResponse resp;
  ASSERT_TRUE(
      stub_->ListStatuses(&ctx, cv1::ListStatusesRequest(), &resp).ok());
  EXPECT_EQ(resp.statuses_size(), 0);
}

TEST_P(ContentServiceTest, AbsurdTotalIsInvalidArgument) {
  Stream s = OpenWrite();
  EXPECT_EQ(Send(s, Msg(cv1::STAT, "r", kMaxBlobSize + 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(ContentServiceTest, MalformedDigestsAreInvalidArgument) {
  EXPECT_EQ(InfoCode("sha256:zz"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InfoCode("nonsense"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadChunks("sha256:../x").status().code(),
            absl::StatusCode::kInvalidArgument);
  Stream s = OpenWrite();
  ASSERT_TRUE(Send(s, Msg(cv1::STAT, "r")).ok());
  EXPECT_EQ(Send(s, Msg(cv1::COMMIT, "", 0, "sha256:short")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(ContentServiceTest, ListStatusesReturnsRefsByteForByte) {
  const std::string refs[] = {"k8s.io/42/layer-sha256:abc",
                              "default/7/img@sha256:def",
                              "ns/1/unicode-\xc3\xa9"};
  std::vector<Stream> streams;
  for (const auto& ref : refs) {
    streams.push_back(OpenWrite());
    ASSERT_TRUE(Send(streams.back(), Msg(cv1::STAT, ref, 5)).ok());
  }
  grpc::ClientContext ctx;
  cv1::ListStatusesResponse resp;
  ASSERT_TRUE(
      stub_->ListStatuses(&ctx, cv1::ListStatusesRequest(), &resp).ok());
  std::vector<std::string> got;
  for (const auto& st : resp.statuses()) got.push_back(st.ref());
  EXPECT_THAT(got, ::testing::UnorderedElementsAreArray(refs));
}

TEST_P(ContentServiceTest, StatusOfUnknownRefIsNotFound) {
  grpc::ClientContext ctx;
  cv1::StatusRequest req;
  req.set_ref("ns/1/nothing");
  cv1::StatusResponse resp;
  EXPECT_EQ(stub_->Status(&ctx, req, &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_P(ContentServiceTest, DeleteAndAbortAreOkForUnknownKeys) {
  Put("r", "gone soon");
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext ctx;
    cv1::DeleteContentRequest req;
    req.set_digest(Sha256Digest("gone soon"));
    google::protobuf::Empty empty;
    EXPECT_TRUE(stub_->Delete(&ctx, req, &empty).ok());
  }
  EXPECT_EQ(InfoCode(Sha256Digest("gone soon")), absl::StatusCode::kNotFound);
  grpc::ClientContext ctx;
  cv1::AbortRequest req;
  req.set_ref("ns/1/never-started");
  google::protobuf::Empty empty;
  EXPECT_TRUE(stub_->Abort(&ctx, req, &empty).ok());
}

TEST_P(ContentServiceTest, ReadAfterDeleteIsNotFound) {
  // The first Read leaves the blob open in the service's cache; Delete must
  // drop it there too.
  const std::string data = Pattern(1000);
  Put("default/1/layer", data);
  auto chunks = ReadChunks(Sha256Digest(data));
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  grpc::ClientContext ctx;
  cv1::DeleteContentRequest del;
  del.set_digest(Sha256Digest(data));
  google::protobuf::Empty empty;
  ASSERT_TRUE(stub_->Delete(&ctx, del, &empty).ok());
  EXPECT_EQ(ReadChunks(Sha256Digest(data)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(ContentServiceTest, ReadHonoursOffsetAndSize) {
  std::string data = Pattern(100000);
  Put("r", data);
  std::string d = Sha256Digest(data);
  auto mid = ReadChunks(d, 1000, 32768);
  ASSERT_TRUE(mid.ok());
  ASSERT_EQ(mid->size(), 1u);
  EXPECT_EQ((*mid)[0], data.substr(1000, 32768));
  auto tail = ReadChunks(d, 99990, 1000);  // Size past the end: to the end.
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ((*tail)[0], data.substr(99990));
  auto neg = ReadChunks(d, -7, 3);  // Negative offset means the start.
  ASSERT_TRUE(neg.ok());
  EXPECT_EQ((*neg)[0], data.substr(0, 3));
  auto at_end = ReadChunks(d, 100000, 0);
  ASSERT_TRUE(at_end.ok());
  EXPECT_TRUE(at_end->empty());
  EXPECT_EQ(ReadChunks(d, 100001, 0).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ReadChunks(Sha256Digest("absent")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(ContentServiceTest, AcceptsSixteenMebibyteMessages) {
  // containerd may send a whole blob in one WRITE (up to its 16 MiB limit).
  std::string data = Pattern(15 << 20);
  Put("ns/1/one-shot", data);
  EXPECT_EQ(InfoCode(Sha256Digest(data)), absl::StatusCode::kOk);
}

TEST_P(ContentServiceTest, ListStreamsEveryBlobInBatches) {
  for (int i = 0; i < 250; ++i) Put(absl::StrCat("r", i), absl::StrCat(i));
  grpc::ClientContext ctx;
  auto reader = stub_->List(&ctx, cv1::ListContentRequest());
  cv1::ListContentResponse resp;
  int total = 0, messages = 0;
  while (reader->Read(&resp)) {
    total += resp.info_size();
    ++messages;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(total, 250);
  EXPECT_EQ(messages, 3);
}

TEST_P(ContentServiceTest, UpdateSetsAndClearsLabels) {
  Put("r", "labelled");
  cv1::UpdateRequest req;
  req.mutable_info()->set_digest(Sha256Digest("labelled"));
  (*req.mutable_info()->mutable_labels())["a"] = "1";
  (*req.mutable_info()->mutable_labels())["b"] = "2";
  req.mutable_update_mask()->add_paths("labels.a");
  cv1::UpdateResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Update(&ctx, req, &resp).ok());
  }
  EXPECT_EQ(resp.info().labels().size(), 1u);
  EXPECT_EQ(resp.info().labels().at("a"), "1");
  req.mutable_update_mask()->set_paths(0, "size");
  grpc::ClientContext ctx;
  EXPECT_EQ(stub_->Update(&ctx, req, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_P(ContentServiceTest, HealthServiceServes) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(
      health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_P(ContentServiceTest, ShutdownLeavesInFlightIngestResumable) {
  Stream s = OpenWrite();
  ASSERT_TRUE(Send(s, Msg(cv1::STAT, "ns/1/inflight", 6)).ok());
  ASSERT_TRUE(Send(s, Msg(cv1::WRITE, "", 0, "", 0, "abc")).ok());
  server_->Shutdown(absl::ZeroDuration());  // Stream still open.
  s.rw->WritesDone();
  s.rw->Finish();
  server_.reset();
  StartServer();
  Stream r = OpenWrite();
  auto st = Send(r, Msg(cv1::STAT, "ns/1/inflight", 6));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->offset(), 3);
  ASSERT_TRUE(Send(r, Msg(cv1::WRITE, "", 0, "", 3, "def")).ok());
  EXPECT_TRUE(Send(r, Msg(cv1::COMMIT, "", 6, Sha256Digest("abcdef"), 6)).ok());
}

// Random, mostly wrong, write streams: whatever a client sends, the store
// never holds a blob whose bytes do not match its digest, and every ingest
// stays readable.
TEST_P(ContentServiceTest, RandomWriteStreamsNeverCorruptTheStore) {
  std::mt19937 rng(20261203);
  const std::string refs[] = {"ns/1/a", "ns/1/b", "ns/2/c"};
  const std::string payloads[] = {"", "x", "hello", std::string(70000, 'q')};
  auto pick = [&rng](auto& arr) -> const auto& {
    return arr[rng() % (sizeof(arr) / sizeof(arr[0]))];
  };
  for (int round = 0; round < 150; ++round) {
    Stream s = OpenWrite();
    int64_t offset = 0;
    bool finished = false;  // Send() finishes the call when it fails.
    for (int m = 0, n = 1 + rng() % 6; m < n; ++m) {
      const std::string& data = pick(payloads);
      const int64_t offsets[] = {0, offset, offset + 1, -1, int64_t{1} << 50};
      const int64_t totals[] = {0, -3, 5, 70005, kMaxBlobSize + 1};
      const std::string expected[] = {"", Sha256Digest(data),
                                      Sha256Digest("hello"), "sha256:bad"};
      auto action = static_cast<cv1::WriteAction>(rng() % 4);
      auto reply =
          Send(s, Msg(action, m == 0 || rng() % 8 == 0 ? pick(refs) : "",
                      pick(totals), pick(expected), pick(offsets), data));
      if (!reply.ok()) {
        finished = true;
        break;
      }
      offset = reply->offset();
    }
    if (finished) continue;
    if (rng() % 3 == 0) {  // Commit whatever the stream left, unchecked.
      finished = !Send(s, Msg(cv1::COMMIT)).ok();
      if (finished) continue;
    }
    if (rng() % 2) {
      s.ctx->TryCancel();
    } else {
      s.rw->WritesDone();
    }
    s.rw->Finish();
  }

  // Every committed blob matches its digest.
  grpc::ClientContext list_ctx;
  auto reader = stub_->List(&list_ctx, cv1::ListContentRequest());
  cv1::ListContentResponse batch;
  int blobs = 0;
  while (reader->Read(&batch)) {
    for (const auto& info : batch.info()) {
      auto chunks = ReadChunks(info.digest());
      ASSERT_TRUE(chunks.ok()) << chunks.status();
      std::string joined;
      for (const auto& c : *chunks) joined += c;
      EXPECT_EQ(Sha256Digest(joined), info.digest());
      EXPECT_EQ(static_cast<int64_t>(joined.size()), info.size());
      ++blobs;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  // Every ingest answers Status with an offset within its total.
  grpc::ClientContext st_ctx;
  cv1::ListStatusesResponse statuses;
  ASSERT_TRUE(
      stub_->ListStatuses(&st_ctx, cv1::ListStatusesRequest(), &statuses).ok());
  for (const auto& st : statuses.statuses()) {
    if (st.total() > 0) EXPECT_LE(st.offset(), st.total()) << st.ref();
  }
  // The random streams do commit now and then; the test is about what they
  // cannot break, but it must have exercised commits.
  EXPECT_GT(blobs, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Transports, ContentServiceTest,
    ::testing::Values(ContentTransport::kHttp2, ContentTransport::kGrpc),
    [](const ::testing::TestParamInfo<ContentTransport>& info) {
      return info.param == ContentTransport::kHttp2 ? "h2" : "grpc";
    });

}  // namespace
}  // namespace shoal::plugin
