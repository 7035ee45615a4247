// Peer blob transfer over real TCP on loopback: a serving store, a fetching
// store, and what the fetching side does with good and bad peers.
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "plugin/file_util.h"
#include "plugin/peer_client.h"
#include "plugin/peer_service.h"

namespace shoal::plugin {
namespace {

namespace pv1 = ::shoal::peer::v1;

class PeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string base = absl::StrCat(
        getenv("TEST_TMPDIR"), "/",
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(base).ok());
    serving_ = *BlobStore::Open(base + "/serving");
    fetching_ = *BlobStore::Open(base + "/fetching");
    service_ =
        std::make_unique<PeerService>(serving_.get(), PeerServiceOptions{2});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = pv1::Peer::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override { server_->Shutdown(); }

  std::string Serve(const std::string& data) {
    auto w = *serving_->OpenIngest(absl::StrCat("seed-", data.size()), 0);
    EXPECT_TRUE(w->Append(data).ok());
    auto info = w->Commit(data.size(), "");
    EXPECT_TRUE(info.ok());
    return info->digest;
  }

  std::unique_ptr<BlobStore> serving_, fetching_;
  std::unique_ptr<PeerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<pv1::Peer::Stub> stub_;
};

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + seed) >> 2);
  return s;
}

TEST_F(PeerTest, FetchesVerifiesAndCommits) {
  std::string data = Pattern(5 << 20, 1);
  std::string digest = Serve(data);
  auto w = *fetching_->OpenIngest("ns/1/layer", data.size());
  auto size = FetchBlobInto(*stub_, digest, data.size(), *w, absl::Seconds(30));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, static_cast<int64_t>(data.size()));
  EXPECT_TRUE(w->Commit(data.size(), digest).ok());
  EXPECT_EQ(fetching_->Info(digest)->size, static_cast<int64_t>(data.size()));
}

TEST_F(PeerTest, ContinuesFromIngestOffset) {
  std::string data = Pattern(3 << 20, 2);
  std::string digest = Serve(data);
  auto w = *fetching_->OpenIngest("ns/1/layer", data.size());
  ASSERT_TRUE(w->Append(absl::string_view(data).substr(0, 1234567)).ok());
  ASSERT_TRUE(FetchBlobInto(*stub_, digest, 0, *w, absl::Seconds(30)).ok());
  EXPECT_EQ(w->RunningDigest(), digest);
}

TEST_F(PeerTest, EmptyTailAndEmptyBlob) {
  std::string digest = Serve("");
  auto w = *fetching_->OpenIngest("empty", 0);
  auto size = FetchBlobInto(*stub_, digest, 0, *w, absl::Seconds(10));
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, 0);
}

TEST_F(PeerTest, UnknownAndMalformedDigests) {
  auto w = *fetching_->OpenIngest("r", 0);
  EXPECT_EQ(
      FetchBlobInto(*stub_, Sha256Digest("nope"), 0, *w, absl::Seconds(10))
          .status()
          .code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(FetchBlobInto(*stub_, "sha256:../../x", 0, *w, absl::Seconds(10))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PeerTest, SizeMismatchIsDataLoss) {
  std::string digest = Serve("four");
  auto w = *fetching_->OpenIngest("r", 0);
  EXPECT_EQ(
      FetchBlobInto(*stub_, digest, 5, *w, absl::Seconds(10)).status().code(),
      absl::StatusCode::kDataLoss);
}

TEST_F(PeerTest, CorruptedPeerBytesNeverCommit) {
  std::string data = Pattern(2 << 20, 3);
  std::string digest = Serve(data);
  // The serving node's file rots underneath it.
  std::string path =
      absl::StrCat(serving_->root(), "/blobs/sha256/", digest.substr(7));
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  data[1000] ^= 1;
  ASSERT_TRUE(WriteFileAtomic(path, data).ok());
  auto w = *fetching_->OpenIngest("ns/1/layer", data.size());
  ASSERT_TRUE(
      FetchBlobInto(*stub_, digest, data.size(), *w, absl::Seconds(30)).ok());
  EXPECT_EQ(w->Commit(data.size(), digest).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(fetching_->Info(digest).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(PeerTest, LimitsConcurrentStreamsPerPeer) {
  std::string digest = Serve(Pattern(64 << 20, 4));
  // Two streams that stay open: each reads one chunk and then stalls, so
  // flow control holds the server's next writes.
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<pv1::FetchBlobChunk>>> open;
  for (int i = 0; i < 2; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    pv1::FetchBlobRequest req;
    req.set_digest(digest);
    open.push_back(stub_->FetchBlob(ctxs.back().get(), req));
    pv1::FetchBlobChunk chunk;
    ASSERT_TRUE(open.back()->Read(&chunk));
  }
  EXPECT_EQ(service_->ActiveStreams("127.0.0.1"), 2);
  auto w = *fetching_->OpenIngest("third", 0);
  EXPECT_EQ(
      FetchBlobInto(*stub_, digest, 0, *w, absl::Seconds(10)).status().code(),
      absl::StatusCode::kResourceExhausted);
  for (auto& ctx : ctxs) ctx->TryCancel();
  for (auto& r : open) r->Finish().IgnoreError();
  // Slots come back once the server has seen the cancels.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (service_->ActiveStreams("127.0.0.1") > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(service_->ActiveStreams("127.0.0.1"), 0);
}

TEST(PeerHost, StripsSchemeAndPort) {
  EXPECT_EQ(PeerHost("ipv4:10.0.0.7:4242"), "10.0.0.7");
  EXPECT_EQ(PeerHost("ipv6:[::1]:4242"), "[::1]");
  EXPECT_EQ(PeerHost("unix:/run/x.sock"), "/run/x.sock");
}

}  // namespace
}  // namespace shoal::plugin
