// The Fetcher against real peer services over TCP on 127.0.0.1, with a
// fixed provider table standing in for the DHT; and hook B end to end
// through the content service's Write stream over a unix socket, sent the
// way containerd's proxy client sends it.
#include "plugin/fetcher.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/content_service.h"
#include "plugin/file_util.h"
#include "plugin/metrics.h"
#include "plugin/node_metrics.h"
#include "plugin/peer_service.h"
#include "plugin/sha256.h"

namespace shoal::plugin {
namespace {

namespace cv1 = ::containerd::services::content::v1;

constexpr absl::Duration kDeadline = absl::Seconds(30);

// Providers by digest, answered at once; digests not in the table are
// answered like a lookup that ran out of time.
class TableFinder : public ProviderFinder {
 public:
  void Set(const std::string& digest, std::vector<dht::Endpoint> providers) {
    absl::MutexLock lock(&mu_);
    table_[digest] = std::move(providers);
  }
  void FindProviders(const std::string& digest, absl::Duration,
                     Callback done) override {
    std::vector<dht::Endpoint> found;
    {
      absl::MutexLock lock(&mu_);
      ++lookups_;
      auto it = table_.find(digest);
      if (it == table_.end()) {
        done(absl::DeadlineExceededError("lookup timed out"));
        return;
      }
      found = it->second;
    }
    done(std::move(found));
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::vector<dht::Endpoint>> table_;
  int lookups_ = 0;
};

// One other node: a store and its peer service on 127.0.0.1.
struct Peer {
  std::unique_ptr<BlobStore> store;
  MetricsRegistry registry;
  std::unique_ptr<NodeMetrics> metrics;
  std::unique_ptr<PeerService> service;
  std::unique_ptr<grpc::Server> server;
  dht::Endpoint endpoint;

  double served() { return metrics->peer_served_bytes().Value(); }
};

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>((i * 131 + seed * 7919) >> 3);
  }
  return s;
}

std::string DigestOf(const std::string& data) {
  Sha256 h;
  h.Update(data);
  return h.Digest();
}

class FetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = absl::StrCat(
        getenv("TEST_TMPDIR"), "/",
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(base_).ok());
    local_ = *BlobStore::Open(base_ + "/local");
    metrics_ = std::make_unique<NodeMetrics>(registry_);
    options_.resolve_timeout = absl::Milliseconds(20);
  }

  void TearDown() override {
    for (auto& p : peers_) {
      p->service->PrepareShutdown();  // Paced streams end at once.
      if (p->server != nullptr) p->server->Shutdown();
    }
  }

  Fetcher& fetcher() {
    if (fetcher_ == nullptr) {
      fetcher_ = std::make_unique<Fetcher>(local_.get(), &finder_,
                                           metrics_.get(), options_);
    }
    return *fetcher_;
  }

  Peer& AddPeer(PeerServiceOptions options = {}) {
    auto p = std::make_unique<Peer>();
    p->store = *BlobStore::Open(absl::StrCat(base_, "/peer", peers_.size()));
    p->metrics = std::make_unique<NodeMetrics>(p->registry);
    p->service = std::make_unique<PeerService>(p->store.get(), options,
                                               p->metrics.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(p->service.get());
    p->server = builder.BuildAndStart();
    EXPECT_NE(p->server, nullptr);
    p->endpoint = *dht::Endpoint::Parse(absl::StrCat("127.0.0.1:", port));
    peers_.push_back(std::move(p));
    return *peers_.back();
  }

  static void Put(BlobStore& store, const std::string& data) {
    auto w = *store.OpenIngest(absl::StrCat("seed-", DigestOf(data)), 0);
    ASSERT_TRUE(w->Append(data).ok());
    ASSERT_TRUE(w->Commit(data.size(), "").ok());
  }

  // Blobs one peer holds, with an ingest for each on this node, as for the
  // layers of one image.
  struct Layers {
    std::vector<std::string> data, digests;
    std::vector<std::unique_ptr<IngestWriter>> writers;
  };
  Layers Serve(Peer& peer, int count, size_t bytes, int seed) {
    Layers l;
    for (int i = 0; i < count; ++i) {
      l.data.push_back(Pattern(bytes, seed + i));
      l.digests.push_back(DigestOf(l.data.back()));
      Put(*peer.store, l.data.back());
      finder_.Set(l.digests.back(), {peer.endpoint});
      l.writers.push_back(*local_->OpenIngest(
          absl::StrCat("ns/1/layer-", l.digests.back()), bytes));
    }
    return l;
  }

  // Fills every layer at once, one thread each, as containerd pulls them.
  std::vector<absl::StatusOr<BlobInfo>> FillAtOnce(Layers& l) {
    std::vector<absl::StatusOr<BlobInfo>> results(l.data.size());
    std::vector<std::thread> fills;
    Fetcher& f = fetcher();  // Made once, before the threads share it.
    for (size_t i = 0; i < l.data.size(); ++i) {
      fills.emplace_back([&, i] {
        results[i] = f.Fill(l.digests[i], l.data[i].size(), *l.writers[i]);
      });
    }
    for (auto& t : fills) t.join();
    return results;
  }

  std::string ReadLocal(const std::string& digest) {
    auto reader = local_->OpenBlob(digest);
    if (!reader.ok()) return "";
    std::string out((*reader)->size(), '\0');
    EXPECT_TRUE((*reader)->ReadAt(0, out.data(), out.size()).ok());
    return out;
  }

  double Failures(const std::string& reason) {
    return registry_
        .GetCounter("shoal_peer_fetch_failures_total", "", {{"reason", reason}})
        ->Value();
  }

  std::string base_;
  std::unique_ptr<BlobStore> local_;
  MetricsRegistry registry_;
  std::unique_ptr<NodeMetrics> metrics_;
  TableFinder finder_;
  FetcherOptions options_;
  std::unique_ptr<Fetcher> fetcher_;
  std::vector<std::unique_ptr<Peer>> peers_;
};

TEST_F(FetcherTest, FillsFromAPeerAndCommits) {
  Peer& peer = AddPeer();
  std::string data = Pattern((3 << 20) + 17, 1);
  std::string digest = DigestOf(data);
  Put(*peer.store, data);
  finder_.Set(digest, {peer.endpoint});

  auto w = *local_->OpenIngest("ns/1/layer-" + digest, data.size());
  absl::StatusOr<BlobInfo> info = fetcher().Fill(digest, data.size(), *w);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->digest, digest);
  EXPECT_TRUE(w->committed());
  EXPECT_EQ(ReadLocal(digest), data);
  EXPECT_EQ(metrics_->peer_received_bytes().Value(), data.size());
  EXPECT_EQ(metrics_->pulls_from_peer().Value(), 1);
  EXPECT_EQ(peer.served(), data.size());
}

TEST_F(FetcherTest, MissLeavesTheIngestEmpty) {
  std::string digest = DigestOf("nobody has this");
  auto w = *local_->OpenIngest("ns/1/layer-" + digest, 15);
  absl::StatusOr<BlobInfo> info = fetcher().Fill(digest, 15, *w);
  EXPECT_TRUE(absl::IsDeadlineExceeded(info.status())) << info.status();
  EXPECT_EQ(w->offset(), 0);
  EXPECT_FALSE(w->committed());

  finder_.Set(digest, {});
  info = fetcher().Fill(digest, 15, *w);
  EXPECT_TRUE(absl::IsNotFound(info.status())) << info.status();
  EXPECT_EQ(
      registry_
          .GetCounter("shoal_lookups_total", "", {{"outcome", "not_found"}})
          ->Value(),
      1);
  EXPECT_EQ(
      registry_.GetCounter("shoal_lookups_total", "", {{"outcome", "timeout"}})
          ->Value(),
      1);
}

TEST_F(FetcherTest, NeverFetchesFromItself) {
  Peer& peer = AddPeer();
  std::string data = Pattern(1000, 2);
  std::string digest = DigestOf(data);
  Put(*peer.store, data);
  finder_.Set(digest, {peer.endpoint});
  options_.self = peer.endpoint;
  auto w = *local_->OpenIngest("ns/1/layer-" + digest, data.size());
  EXPECT_TRUE(
      absl::IsNotFound(fetcher().Fill(digest, data.size(), *w).status()));
  EXPECT_EQ(peer.served(), 0);
}

TEST_F(FetcherTest, CorruptPeerIsShunnedAndNothingLands) {
  PeerServiceOptions bad;
  bad.corrupt_uploads = true;
  Peer& liar = AddPeer(bad);
  std::string data = Pattern(2 << 20, 3);
  std::string digest = DigestOf(data);
  Put(*liar.store, data);
  finder_.Set(digest, {liar.endpoint});

  auto w = *local_->OpenIngest("ns/1/layer-" + digest, data.size());
  absl::StatusOr<BlobInfo> info = fetcher().Fill(digest, data.size(), *w);
  EXPECT_TRUE(absl::IsUnavailable(info.status())) << info.status();
  EXPECT_EQ(w->offset(), 0);
  EXPECT_TRUE(absl::IsNotFound(local_->Info(digest).status()));
  EXPECT_TRUE(local_->List()->empty());
  EXPECT_EQ(Failures("corrupt"), 1);
  EXPECT_TRUE(fetcher().IsShunned(liar.endpoint));

  // Shunned: not even asked again.
  double served = liar.served();
  info = fetcher().Fill(digest, data.size(), *w);
  EXPECT_FALSE(info.ok());
  EXPECT_EQ(liar.served(), served);
}

TEST_F(FetcherTest, HonestPeerCompletesAfterACorruptOne) {
  PeerServiceOptions bad;
  bad.corrupt_uploads = true;
  Peer& liar = AddPeer(bad);
  Peer& honest = AddPeer();
  std::string data = Pattern(2 << 20, 4);
  std::string digest = DigestOf(data);
  Put(*liar.store, data);
  Put(*honest.store, data);
  // Candidates are tried in random order; either way the result is right.
  finder_.Set(digest, {liar.endpoint, honest.endpoint});

  auto w = *local_->OpenIngest("ns/1/layer-" + digest, data.size());
  absl::StatusOr<BlobInfo> info = fetcher().Fill(digest, data.size(), *w);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(ReadLocal(digest), data);
  EXPECT_EQ(Failures("corrupt"), liar.served() > 0 ? 1 : 0);
  EXPECT_EQ(fetcher().IsShunned(liar.endpoint), liar.served() > 0);
}

// Waits until `fn` holds or the deadline passes.
template <typename Fn>
bool WaitUntil(Fn fn) {
  const absl::Time deadline = absl::Now() + kDeadline;
  while (!fn()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

TEST_F(FetcherTest, ContinuesWithTheNextPeerWhenOneDiesMidStream) {
  // Both peers slow, so the transfer is caught in the middle.
  PeerServiceOptions slow;
  slow.upload_bytes_per_second = 4 << 20;
  Peer& a = AddPeer(slow);
  Peer& b = AddPeer(slow);
  std::string data = Pattern(6 << 20, 5);
  std::string digest = DigestOf(data);
  Put(*a.store, data);
  Put(*b.store, data);
  finder_.Set(digest, {a.endpoint, b.endpoint});

  auto w = *local_->OpenIngest("ns/1/layer-" + digest, data.size());
  absl::StatusOr<BlobInfo> info;
  Fetcher& f = fetcher();  // Made before the thread shares it.
  std::thread fill([&] { info = f.Fill(digest, data.size(), *w); });
  // Served is counted as chunks leave the peer; wait until some have landed
  // in the ingest too, so the second peer has something to continue from.
  Peer* first = nullptr;
  ASSERT_TRUE(WaitUntil([&] {
    first = a.served() > 0 ? &a : b.served() > 0 ? &b : nullptr;
    absl::StatusOr<IngestStatus> st =
        local_->GetIngestStatus("ns/1/layer-" + digest);
    return first != nullptr && st.ok() && st->offset > 0;
  }));
  Peer* second = first == &a ? &b : &a;
  first->server->Shutdown(std::chrono::system_clock::now());  // Cancels.
  fill.join();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(ReadLocal(digest), data);
  EXPECT_GT(second->served(), 0);
  EXPECT_LT(second->served(), data.size());  // Continued, not restarted.
  EXPECT_EQ(Failures("unavailable"), 1);
  EXPECT_EQ(metrics_->peer_received_bytes().Value(), data.size());
}

TEST_F(FetcherTest, OneDownloadForConcurrentFillsOfOneDigest) {
  PeerServiceOptions slow;
  slow.upload_bytes_per_second = 8 << 20;
  Peer& peer = AddPeer(slow);
  std::string data = Pattern(4 << 20, 6);
  std::string digest = DigestOf(data);
  Put(*peer.store, data);
  finder_.Set(digest, {peer.endpoint});

  auto w1 = *local_->OpenIngest("ns1/1/layer-" + digest, data.size());
  auto w2 = *local_->OpenIngest("ns2/7/layer-" + digest, data.size());
  absl::StatusOr<BlobInfo> first, second;
  fetcher();  // Made once, before the threads share it.
  std::thread t1([&] { first = fetcher().Fill(digest, data.size(), *w1); });
  ASSERT_TRUE(WaitUntil([&] { return peer.served() > 0; }));
  std::thread t2([&] { second = fetcher().Fill(digest, data.size(), *w2); });
  t1.join();
  t2.join();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->digest, digest);
  EXPECT_EQ(peer.served(), data.size());
  EXPECT_EQ(metrics_->fetch_dedups().Value(), 1);
  EXPECT_FALSE(w2->committed());  // The caller discards its empty ingest.
  EXPECT_EQ(ReadLocal(digest), data);
}

TEST_F(FetcherTest, ShutdownCancelsATransferAndLaterFills) {
  PeerServiceOptions slow;
  slow.upload_bytes_per_second = 1 << 20;  // 8 MiB would take 8 s.
  Peer& peer = AddPeer(slow);
  std::string data = Pattern(8 << 20, 11);
  std::string digest = DigestOf(data);
  Put(*peer.store, data);
  finder_.Set(digest, {peer.endpoint});

  auto w = *local_->OpenIngest("ns/1/layer-" + digest, data.size());
  absl::StatusOr<BlobInfo> info;
  Fetcher& f = fetcher();  // Made before the thread shares it.
  std::thread fill([&] { info = f.Fill(digest, data.size(), *w); });
  ASSERT_TRUE(WaitUntil([&] { return peer.served() > 0; }));
  fetcher().Shutdown();
  fill.join();
  EXPECT_TRUE(absl::IsUnavailable(info.status())) << info.status();
  EXPECT_EQ(w->offset(), 0);
  EXPECT_LT(peer.served(), data.size());
  EXPECT_TRUE(
      absl::IsUnavailable(fetcher().Fill(digest, data.size(), *w).status()));
  EXPECT_FALSE(fetcher().IsShunned(peer.endpoint));  // Not the peer's fault.
}

TEST_F(FetcherTest, BusyPeerIsRetriedNotShunned) {
  // The peer allows one stream per client address; three layers of one
  // image are filled at once, as containerd pulls them.
  PeerServiceOptions strict;
  strict.max_streams_per_peer = 1;
  strict.upload_bytes_per_second = 16 << 20;
  Peer& peer = AddPeer(strict);
  Layers layers = Serve(peer, 3, 2 << 20, 20);
  std::vector<absl::StatusOr<BlobInfo>> results = FillAtOnce(layers);
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_EQ(ReadLocal(layers.digests[i]), layers.data[i]);
  }
  EXPECT_FALSE(fetcher().IsShunned(peer.endpoint));
  EXPECT_GE(Failures("busy"), 1);
  EXPECT_EQ(Failures("other"), 0);
}

TEST_F(FetcherTest, ManyFillsFromOnePeerEachDownloadOnce) {
  // More fills than the peer allows streams, this node's own cap at the
  // peer's: they queue for stream slots (and retry the rare refusal that
  // comes when a slot is freed on our side before the peer's), and each
  // blob crosses the wire once.
  PeerServiceOptions strict;
  strict.max_streams_per_peer = 2;
  strict.upload_bytes_per_second = 16 << 20;
  Peer& peer = AddPeer(strict);
  options_.max_streams_per_peer = 2;
  Layers layers = Serve(peer, 5, 1 << 20, 40);
  for (const absl::StatusOr<BlobInfo>& r : FillAtOnce(layers)) {
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_FALSE(fetcher().IsShunned(peer.endpoint));
  EXPECT_EQ(peer.served(), 5 * (1 << 20));
}

TEST_F(FetcherTest, NextFillPrefersAnIdlePeer) {
  // Two holders of two layers; while the first layer streams from one, the
  // second layer's fill goes to the other.
  PeerServiceOptions slow;
  slow.upload_bytes_per_second = 4 << 20;
  Peer& a = AddPeer(slow);
  Peer& b = AddPeer(slow);
  std::vector<std::string> data, digests;
  for (int i = 0; i < 2; ++i) {
    data.push_back(Pattern(4 << 20, 60 + i));
    digests.push_back(DigestOf(data[i]));
    Put(*a.store, data[i]);
    Put(*b.store, data[i]);
    finder_.Set(digests[i], {a.endpoint, b.endpoint});
  }
  auto w0 = *local_->OpenIngest("ns/1/layer-" + digests[0], data[0].size());
  auto w1 = *local_->OpenIngest("ns/1/layer-" + digests[1], data[1].size());
  Fetcher& f = fetcher();  // Made before the threads share it.
  absl::StatusOr<BlobInfo> first, second;
  std::thread t0([&] { first = f.Fill(digests[0], data[0].size(), *w0); });
  Peer* busy = nullptr;
  ASSERT_TRUE(WaitUntil([&] {
    busy = a.served() > 0 ? &a : b.served() > 0 ? &b : nullptr;
    return busy != nullptr;
  }));
  Peer* idle = busy == &a ? &b : &a;
  std::thread t1([&] { second = f.Fill(digests[1], data[1].size(), *w1); });
  t0.join();
  t1.join();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(busy->served(), data[0].size());
  EXPECT_EQ(idle->served(), data[1].size());
}

// Past max_cached_channels the least recently used peer's channel goes, not
// every channel at once.
TEST_F(FetcherTest, ChannelCacheDropsTheLeastRecentlyUsedPeer) {
  options_.max_cached_channels = 2;
  Peer& a = AddPeer();
  Peer& b = AddPeer();
  Peer& c = AddPeer();
  Layers from_a = Serve(a, 2, 4096, 10);
  Layers from_b = Serve(b, 1, 4096, 20);
  Layers from_c = Serve(c, 1, 4096, 30);
  auto fill = [&](Layers& l, size_t i) {
    absl::StatusOr<BlobInfo> info =
        fetcher().Fill(l.digests[i], l.data[i].size(), *l.writers[i]);
    ASSERT_TRUE(info.ok()) << info.status();
  };
  fill(from_a, 0);
  fill(from_b, 0);
  fill(from_a, 1);  // a is now more recent than b.
  fill(from_c, 0);  // The cache is full: b's channel goes.
  std::vector<dht::Endpoint> cached = fetcher().ChannelPeers();
  EXPECT_THAT(cached, ::testing::UnorderedElementsAre(a.endpoint, c.endpoint));
}

TEST_F(FetcherTest, StalledPeerIsCancelledAndShunned) {
  // The cap lets the first two chunks go at once (the limiter's burst);
  // the third would wait 8 s.
  PeerServiceOptions trickle;
  trickle.upload_bytes_per_second = 128 << 10;
  Peer& slow = AddPeer(trickle);
  std::string data = Pattern(4 << 20, 12);
  std::string digest = DigestOf(data);
  Put(*slow.store, data);
  finder_.Set(digest, {slow.endpoint});
  options_.stall_timeout = absl::Milliseconds(400);

  auto w = *local_->OpenIngest("ns/1/layer-" + digest, data.size());
  absl::StatusOr<BlobInfo> info = fetcher().Fill(digest, data.size(), *w);
  EXPECT_TRUE(absl::IsUnavailable(info.status())) << info.status();
  EXPECT_EQ(w->offset(), 0);
  EXPECT_EQ(Failures("timeout"), 1);
  EXPECT_TRUE(fetcher().IsShunned(slow.endpoint));
  EXPECT_LT(slow.served(), data.size());

  // A healthy peer serves the blob after all.
  Peer& fast = AddPeer();
  Put(*fast.store, data);
  finder_.Set(digest, {slow.endpoint, fast.endpoint});
  info = fetcher().Fill(digest, data.size(), *w);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(ReadLocal(digest), data);
}

// Hook B through the real Write RPC.
class FillThroughServiceTest : public FetcherTest {
 protected:
  void SetUp() override {
    FetcherTest::SetUp();
    service_ = std::make_unique<ContentService>(local_.get(), nullptr,
                                                &fetcher(), metrics_.get());
    grpc::ServerBuilder builder;
    // Unix socket paths are short (108 bytes); TEST_TMPDIR is not. PIDs
    // repeat across sandboxed runs, so the directory is made unique.
    char dir[] = "/tmp/shoal-fetcher-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    socket_dir_ = dir;
    std::string socket = socket_dir_ + "/content.sock";
    builder.AddListeningPort("unix:" + socket,
                             grpc::InsecureServerCredentials());
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = cv1::Content::NewStub(grpc::CreateChannel(
        "unix:" + socket, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_->Shutdown();
    RemoveTree(socket_dir_).IgnoreError();
    FetcherTest::TearDown();
  }

  using Stream = grpc::ClientReaderWriter<cv1::WriteContentRequest,
                                          cv1::WriteContentResponse>;

  static cv1::WriteContentResponse Send(Stream& s, cv1::WriteAction action,
                                        const std::string& ref, int64_t total,
                                        int64_t offset = 0,
                                        const std::string& data = "",
                                        const std::string& expected = "") {
    cv1::WriteContentRequest req;
    req.set_action(action);
    req.set_ref(ref);
    req.set_total(total);
    req.set_offset(offset);
    req.set_data(data);
    req.set_expected(expected);
    EXPECT_TRUE(s.Write(req));
    cv1::WriteContentResponse resp;
    EXPECT_TRUE(s.Read(&resp));
    return resp;
  }

  std::string socket_dir_;
  std::unique_ptr<ContentService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<cv1::Content::Stub> stub_;
};

TEST_F(FillThroughServiceTest, SecondStatReportsTheWholeBlob) {
  Peer& peer = AddPeer();
  std::string data = Pattern((5 << 20) + 3, 7);
  std::string digest = DigestOf(data);
  Put(*peer.store, data);
  finder_.Set(digest, {peer.endpoint});
  const std::string ref = "default/3/layer-" + digest;
  const int64_t size = data.size();

  grpc::ClientContext ctx;
  auto stream = stub_->Write(&ctx);
  // The first STAT (inside containerd's metadata transaction) is answered
  // from local state: nothing fetched yet.
  cv1::WriteContentResponse r = Send(*stream, cv1::STAT, ref, size);
  EXPECT_EQ(r.offset(), 0);
  EXPECT_EQ(peer.served(), 0);
  r = Send(*stream, cv1::STAT, ref, 0);
  EXPECT_EQ(r.offset(), size);
  EXPECT_EQ(r.total(), size);
  // A GC pass between the fill and containerd's commit: the blob stays.
  ::google::protobuf::Empty empty;
  cv1::DeleteContentRequest del;
  del.set_digest(digest);
  {
    grpc::ClientContext dctx;
    EXPECT_TRUE(stub_->Delete(&dctx, del, &empty).ok());
  }
  EXPECT_TRUE(local_->Info(digest).ok());
  // containerd's commit check and COMMIT: no data, the stale offset 0.
  r = Send(*stream, cv1::STAT, "", 0);
  EXPECT_EQ(r.offset(), size);
  r = Send(*stream, cv1::COMMIT, "", size, 0, "", digest);
  EXPECT_EQ(r.digest(), digest);
  EXPECT_EQ(r.offset(), size);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ReadLocal(digest), data);
  EXPECT_TRUE(local_->ListIngests()->empty());
  EXPECT_EQ(metrics_->upstream_written_bytes().Value(), 0);
  // Once the stream has ended, deletes work again.
  {
    grpc::ClientContext dctx;
    EXPECT_TRUE(stub_->Delete(&dctx, del, &empty).ok());
  }
  EXPECT_TRUE(absl::IsNotFound(local_->Info(digest).status()));
}

TEST_F(FillThroughServiceTest, FailedFillFallsBackToTheClientsWrites) {
  // Only peer, dies mid-stream: the ingest goes back to 0 and the client
  // (containerd's registry download) writes the blob itself.
  PeerServiceOptions slow;
  slow.upload_bytes_per_second = 2 << 20;
  Peer& peer = AddPeer(slow);
  std::string data = Pattern(4 << 20, 8);
  std::string digest = DigestOf(data);
  Put(*peer.store, data);
  finder_.Set(digest, {peer.endpoint});
  const std::string ref = "default/4/layer-" + digest;
  const int64_t size = data.size();

  std::thread killer([&] {
    ASSERT_TRUE(WaitUntil([&] { return peer.served() > 0; }));
    peer.server->Shutdown(std::chrono::system_clock::now());
  });
  grpc::ClientContext ctx;
  auto stream = stub_->Write(&ctx);
  Send(*stream, cv1::STAT, ref, size);
  cv1::WriteContentResponse r = Send(*stream, cv1::STAT, ref, 0);
  killer.join();
  EXPECT_EQ(r.offset(), 0);
  for (int64_t off = 0; off < size; off += 1 << 20) {
    r = Send(*stream, cv1::WRITE, "", 0, off, data.substr(off, 1 << 20));
    EXPECT_EQ(r.offset(), std::min<int64_t>(off + (1 << 20), size));
  }
  r = Send(*stream, cv1::COMMIT, "", size, size, "", digest);
  EXPECT_EQ(r.digest(), digest);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ReadLocal(digest), data);
  EXPECT_EQ(metrics_->upstream_written_bytes().Value(), size);
  EXPECT_EQ(metrics_->pulls_from_upstream().Value(), 1);
  EXPECT_EQ(metrics_->pulls_from_peer().Value(), 0);
}

TEST_F(FillThroughServiceTest, RefWithoutDigestIsNeverFilled) {
  Peer& peer = AddPeer();
  std::string data = Pattern(1000, 9);
  Put(*peer.store, data);
  grpc::ClientContext ctx;
  auto stream = stub_->Write(&ctx);
  Send(*stream, cv1::STAT, "default/5/import-blob", 1000);
  cv1::WriteContentResponse r = Send(*stream, cv1::STAT, "", 0);
  EXPECT_EQ(r.offset(), 0);
  stream->WritesDone();
  stream->Finish().IgnoreError();
  EXPECT_EQ(peer.served(), 0);
}

TEST_F(FillThroughServiceTest, DataAfterAFillIsRefused) {
  Peer& peer = AddPeer();
  std::string data = Pattern(1000, 10);
  std::string digest = DigestOf(data);
  Put(*peer.store, data);
  finder_.Set(digest, {peer.endpoint});
  const std::string ref = "default/6/config-" + digest;
  grpc::ClientContext ctx;
  auto stream = stub_->Write(&ctx);
  Send(*stream, cv1::STAT, ref, 1000);
  EXPECT_EQ(Send(*stream, cv1::STAT, "", 0).offset(), 1000);
  cv1::WriteContentRequest req;
  req.set_action(cv1::WRITE);
  req.set_data("x");
  ASSERT_TRUE(stream->Write(req));
  cv1::WriteContentResponse resp;
  EXPECT_FALSE(stream->Read(&resp));
  EXPECT_EQ(stream->Finish().error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ReadLocal(digest), data);  // The filled blob is untouched.
}

}  // namespace
}  // namespace shoal::plugin
