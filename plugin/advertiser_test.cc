// Two content servers, each with a DHT advertiser over real UDP on
// 127.0.0.20 and 127.0.0.21: blobs committed or deleted through one server's
// content API (a real gRPC client on its unix socket) appear in and vanish
// from the other's provider lookups, and blobs stored before start are
// advertised at start.
#include "plugin/advertiser.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "containerd/services/content/v1/content.grpc.pb.h"
#include "dht/fake_dns_server.h"
#include "gtest/gtest.h"
#include "plugin/file_util.h"
#include "plugin/server.h"
#include "plugin/sha256.h"
#include "plugin/store.h"

namespace shoal::plugin {
namespace {

namespace cv1 = ::containerd::services::content::v1;

// Generous for a loaded 2-core CI host; loopback lookups take milliseconds.
constexpr absl::Duration kDeadline = absl::Seconds(20);
constexpr absl::Duration kPollInterval = absl::Milliseconds(20);

// One shoald's worth: an advertiser and a content server using it.
struct Daemon {
  std::unique_ptr<Advertiser> advertiser;
  std::unique_ptr<ContentServer> server;
  std::unique_ptr<cv1::Content::Stub> stub;
};

class AdvertiserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Unix socket paths are limited to 108 bytes; TEST_TMPDIR is long.
    char tmpl[] = "/tmp/shoal-adv-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }

  void TearDown() override {
    // Servers first: they call into their advertisers.
    for (Daemon* d : {&a_, &b_}) d->server.reset();
    for (Daemon* d : {&a_, &b_}) d->advertiser.reset();
    RemoveTree(dir_).IgnoreError();
  }

  // Starts a daemon named `name` with its DHT on `ip`, joining `seeds`, and
  // advertises what its store already holds, as shoald does.
  void StartDaemon(Daemon& d, const std::string& name, const std::string& ip,
                   std::vector<dht::Endpoint> seeds) {
    StartDaemonWith(d, name, ip,
                    [&](Advertiser& a) { a.Start(std::move(seeds)); });
  }

  // As StartDaemon, with `start` joining the DHT, on `port` (0: any).
  void StartDaemonWith(Daemon& d, const std::string& name,
                       const std::string& ip,
                       const std::function<void(Advertiser&)>& start,
                       uint16_t port = 0) {
    auto adv = Advertiser::Create(ip, port);
    ASSERT_TRUE(adv.ok()) << adv.status();
    d.advertiser = *std::move(adv);
    const std::string socket = absl::StrCat(dir_, "/", name, ".sock");
    auto server = ContentServer::Start(socket, Root(name), d.advertiser.get());
    ASSERT_TRUE(server.ok()) << server.status();
    d.server = *std::move(server);
    start(*d.advertiser);
    ASSERT_TRUE(d.advertiser->AdvertiseStored(d.server->store()).ok());
    d.stub = cv1::Content::NewStub(grpc::CreateChannel(
        absl::StrCat("unix:", socket), grpc::InsecureChannelCredentials()));
  }

  std::string Root(const std::string& name) const {
    return absl::StrCat(dir_, "/", name, "-root");
  }

  // Commits `data` through the content API in one COMMIT message.
  void Commit(Daemon& d, const std::string& data) {
    cv1::WriteContentRequest req;
    req.set_action(cv1::COMMIT);
    req.set_ref(absl::StrCat("ref-", Sha256Digest(data)));
    req.set_total(data.size());
    req.set_expected(Sha256Digest(data));
    req.set_data(data);
    grpc::ClientContext ctx;
    auto rw = d.stub->Write(&ctx);
    cv1::WriteContentResponse resp;
    ASSERT_TRUE(rw->Write(req) && rw->Read(&resp));
    rw->WritesDone();
    ASSERT_TRUE(rw->Finish().ok());
    EXPECT_EQ(resp.digest(), Sha256Digest(data));
  }

  void Delete(Daemon& d, const std::string& digest) {
    cv1::DeleteContentRequest req;
    req.set_digest(digest);
    grpc::ClientContext ctx;
    ::google::protobuf::Empty resp;
    ASSERT_TRUE(d.stub->Delete(&ctx, req, &resp).ok());
  }

  // One FindProviders from `d`, waited for; empty if it did not finish.
  static std::vector<dht::Endpoint> FindOnce(Daemon& d,
                                             const std::string& digest) {
    // Shared with the callback, which may run after a timed-out wait.
    struct Result {
      absl::Notification done;
      std::vector<dht::Endpoint> providers;
    };
    auto result = std::make_shared<Result>();
    d.advertiser->FindProviders(
        digest, kDeadline,
        [result](absl::StatusOr<std::vector<dht::Endpoint>> providers) {
          if (providers.ok()) result->providers = *std::move(providers);
          result->done.Notify();
        });
    if (!result->done.WaitForNotificationWithTimeout(kDeadline)) return {};
    return result->providers;
  }

  // Looks `digest` up from `d` until whether `provider` is among the results
  // equals `want`, or the deadline passes. Returns whether it got there.
  static bool PollProvider(Daemon& d, const std::string& digest,
                           const dht::Endpoint& provider, bool want) {
    const absl::Time deadline = absl::Now() + kDeadline;
    while (absl::Now() < deadline) {
      std::vector<dht::Endpoint> found = FindOnce(d, digest);
      bool named =
          std::find(found.begin(), found.end(), provider) != found.end();
      if (named == want) return true;
      absl::SleepFor(kPollInterval);
    }
    return false;
  }

  std::string dir_;
  Daemon a_;
  Daemon b_;
};

TEST_F(AdvertiserTest, CommitAdvertisesDeleteWithdrawsAndStoredBlobsAtStart) {
  // A blob in A's store before A starts.
  const std::string before = "stored before the daemon started";
  {
    auto store = BlobStore::Open(Root("a"));
    ASSERT_TRUE(store.ok()) << store.status();
    auto writer = (*store)->OpenIngest("before", before.size());
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(before).ok());
    ASSERT_TRUE((*writer)->Commit(before.size(), Sha256Digest(before)).ok());
  }

  StartDaemon(a_, "a", "127.0.0.20", {});
  StartDaemon(b_, "b", "127.0.0.21", {a_.advertiser->endpoint()});
  const dht::Endpoint a_endpoint = a_.advertiser->endpoint();
  EXPECT_TRUE(PollProvider(b_, Sha256Digest(before), a_endpoint, true))
      << "blob stored before start was not advertised";

  const std::string data = "a layer committed through the content API";
  Commit(a_, data);
  EXPECT_TRUE(PollProvider(b_, Sha256Digest(data), a_endpoint, true))
      << "committed blob was not advertised";

  Delete(a_, Sha256Digest(data));
  EXPECT_TRUE(PollProvider(b_, Sha256Digest(data), a_endpoint, false))
      << "deleted blob is still advertised";
  // The other blob stays advertised.
  EXPECT_TRUE(PollProvider(b_, Sha256Digest(before), a_endpoint, true));
}

// A store larger than one announce op (64 digests) is advertised in
// several ops, one after another; none is lost at the seams.
TEST_F(AdvertiserTest, LargeStoreIsAdvertisedInSeveralOps) {
  constexpr int kBlobs = 150;
  std::vector<std::string> digests;
  {
    auto store = BlobStore::Open(Root("a"));
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 0; i < kBlobs; ++i) {
      std::string data = absl::StrCat("stored blob ", i);
      auto writer = (*store)->OpenIngest(absl::StrCat("seed-", i), 0);
      ASSERT_TRUE(writer.ok()) << writer.status();
      ASSERT_TRUE((*writer)->Append(data).ok());
      ASSERT_TRUE((*writer)->Commit(data.size(), "").ok());
      digests.push_back(Sha256Digest(data));
    }
  }
  StartDaemon(a_, "a", "127.0.0.20", {});
  StartDaemon(b_, "b", "127.0.0.21", {a_.advertiser->endpoint()});
  const dht::Endpoint a_endpoint = a_.advertiser->endpoint();
  for (int i : {0, 63, 64, 127, 128, kBlobs - 1}) {
    EXPECT_TRUE(PollProvider(b_, digests[i], a_endpoint, true))
        << "stored blob " << i << " was not advertised";
  }
}

// A node with many blobs joins and advertises them all: the ops are paced,
// so the peer it joined through never has to drop its requests for going
// over the per-source rate limit (100/s, bursts of 400).
TEST_F(AdvertiserTest, StoredBlobsAreAdvertisedWithinPeersRateLimits) {
  constexpr int kBlobs = 600;  // Unpaced, that is a burst of over 600.
  std::vector<std::string> digests;
  {
    auto store = BlobStore::Open(Root("a"));
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 0; i < kBlobs; ++i) {
      std::string data = absl::StrCat("many blob ", i);
      auto writer = (*store)->OpenIngest(absl::StrCat("seed-", i), 0);
      ASSERT_TRUE(writer.ok()) << writer.status();
      ASSERT_TRUE((*writer)->Append(data).ok());
      ASSERT_TRUE((*writer)->Commit(data.size(), "").ok());
      digests.push_back(Sha256Digest(data));
    }
  }
  // B first, alone; A joins through B, so every lookup of A asks B.
  StartDaemon(b_, "b", "127.0.0.21", {});
  StartDaemon(a_, "a", "127.0.0.20", {b_.advertiser->endpoint()});
  const dht::Endpoint a_endpoint = a_.advertiser->endpoint();
  // B's counters, read on its loop.
  auto counters = [&] {
    auto read = std::make_shared<absl::Notification>();
    auto out = std::make_shared<dht::RpcCounters>();
    b_.advertiser->dht().RunOnLoop([read, out](dht::Node& node) {
      *out = node.rpc_counters();
      read->Notify();
    });
    EXPECT_TRUE(read->WaitForNotificationWithTimeout(kDeadline));
    return *out;
  };
  // Every blob's lookup reaches B: wait until B has seen them all.
  const absl::Time deadline = absl::Now() + kDeadline;
  while (counters().requests_received < static_cast<uint64_t>(kBlobs) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  dht::RpcCounters b = counters();
  EXPECT_GE(b.requests_received, static_cast<uint64_t>(kBlobs));
  EXPECT_EQ(b.requests_rate_limited, 0u);
  for (int i : {0, kBlobs / 2, kBlobs - 1}) {
    EXPECT_TRUE(PollProvider(b_, digests[i], a_endpoint, true));
  }
}

// Seeds could only be IP literals; a Kubernetes headless Service name that
// lists every node (the joiner itself included) must work as well.
TEST_F(AdvertiserTest, JoinsThroughASeedName) {
  // Both daemons bind the same port on their own loopback IP, so one
  // "name:port" seed covers both; take a port that is free on A's IP.
  auto probe = Advertiser::Create("127.0.0.22", 0);
  ASSERT_TRUE(probe.ok()) << probe.status();
  const uint16_t port = (*probe)->endpoint().port();
  probe->reset();
  dht::FakeDnsServer dns(
      {{"shoal-nodes.test", {dht::V4("127.0.0.22"), dht::V4("127.0.0.23")}}});
  const std::string seed = absl::StrCat("shoal-nodes.test:", port);
  auto start = [&](Advertiser& a) {
    ASSERT_TRUE(a.StartResolving({seed}, {dns.address(), absl::Seconds(2)},
                                 absl::Seconds(1))
                    .ok());
  };
  // A finds only itself (B is not up yet) and starts alone; B joins A.
  StartDaemonWith(a_, "a", "127.0.0.22", start, port);
  StartDaemonWith(b_, "b", "127.0.0.23", start, port);

  const std::string data = "a layer found through a named seed";
  Commit(b_, data);
  EXPECT_TRUE(
      PollProvider(a_, Sha256Digest(data), b_.advertiser->endpoint(), true));
  const std::string other = "and one the other way";
  Commit(a_, other);
  EXPECT_TRUE(
      PollProvider(b_, Sha256Digest(other), a_.advertiser->endpoint(), true));
}

}  // namespace
}  // namespace shoal::plugin
