#include "plugin/store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/file_util.h"

namespace shoal::plugin {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(
        getenv("TEST_TMPDIR"), "/store-",
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(root_).ok());
    Reopen();
  }

  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<BlobStore>> s = BlobStore::Open(root_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }

  std::unique_ptr<IngestWriter> MustOpen(absl::string_view ref,
                                         int64_t total = 0) {
    absl::StatusOr<std::unique_ptr<IngestWriter>> w =
        store_->OpenIngest(ref, total);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? *std::move(w) : nullptr;
  }

  // Writes and commits `data` under `ref`; returns its digest.
  std::string Put(absl::string_view ref, absl::string_view data) {
    auto w = MustOpen(ref, data.size());
    EXPECT_TRUE(w->Append(data).ok());
    absl::StatusOr<BlobInfo> info = w->Commit(data.size(), Sha256Digest(data));
    EXPECT_TRUE(info.ok()) << info.status();
    return Sha256Digest(data);
  }

  std::string ReadAll(absl::string_view digest) {
    auto r = store_->OpenBlob(digest);
    EXPECT_TRUE(r.ok()) << r.status();
    std::string out((*r)->size(), '\0');
    auto n = (*r)->ReadAt(0, out.data(), out.size());
    EXPECT_TRUE(n.ok());
    out.resize(*n);
    return out;
  }

  std::string BlobFile(absl::string_view digest) {
    return absl::StrCat(root_, "/blobs/sha256/", digest.substr(7));
  }
  std::string IngestDirOf(absl::string_view ref) {
    return absl::StrCat(root_, "/ingest/", Sha256Digest(ref).substr(7));
  }

  std::string root_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(BlobStoreTest, CommitsInContainerdLayout) {
  std::string digest = Put("default/1/layer-sha256:abc", "hello world");
  struct stat st;
  ASSERT_EQ(stat(BlobFile(digest).c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 11);
  EXPECT_EQ(st.st_mode & 0777, 0444);
  EXPECT_NE(access(IngestDirOf("default/1/layer-sha256:abc").c_str(), F_OK), 0);
  EXPECT_EQ(ReadAll(digest), "hello world");
  auto info = store_->Info(digest);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->size, 11);
}

TEST_F(BlobStoreTest, IngestFilesMatchContainerd) {
  auto w = MustOpen("ns/7/config-sha256:x", 5);
  ASSERT_TRUE(w->Append("abc").ok());
  std::string dir = IngestDirOf("ns/7/config-sha256:x");
  EXPECT_EQ(*ReadSmallFile(dir + "/ref"), "ns/7/config-sha256:x");
  EXPECT_EQ(*ReadSmallFile(dir + "/total"), "5");
  EXPECT_EQ(*ReadSmallFile(dir + "/data"), "abc");
  EXPECT_TRUE(ReadSmallFile(dir + "/startedat").ok());
  EXPECT_TRUE(ReadSmallFile(dir + "/updatedat").ok());
}

TEST_F(BlobStoreTest, WrongSizeOrDigestKeepsIngest) {
  auto w = MustOpen("r", 0);
  ASSERT_TRUE(w->Append("data").ok());
  auto bad_size = w->Commit(5, "");
  EXPECT_EQ(bad_size.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad_size.status().message(), HasSubstr("unexpected commit size"));
  auto bad_digest = w->Commit(4, Sha256Digest("datb"));
  EXPECT_EQ(bad_digest.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad_digest.status().message(),
              HasSubstr("unexpected commit digest"));
  EXPECT_EQ(store_->Info(Sha256Digest("datb")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(w->offset(), 4);
  EXPECT_TRUE(w->Commit(4, Sha256Digest("data")).ok());
}

TEST_F(BlobStoreTest, MalformedExpectedDigestIsInvalidArgument) {
  auto w = MustOpen("r", 0);
  ASSERT_TRUE(w->Append("data").ok());
  EXPECT_EQ(w->Commit(4, "sha256:XYZ").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(BlobStoreTest, SecondWriterOnRefIsUnavailable) {
  auto w = MustOpen("ns/1/layer", 0);
  auto second = store_->OpenIngest("ns/1/layer", 0);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  w.reset();
  EXPECT_TRUE(store_->OpenIngest("ns/1/layer", 0).ok());
}

TEST_F(BlobStoreTest, ConcurrentWritersOnOneRefNeverInterleave) {
  constexpr int kThreads = 8;
  std::atomic<int> winners{0}, unavailable{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto w = store_->OpenIngest("shared-ref", 0);
      if (!w.ok()) {
        if (absl::IsUnavailable(w.status())) ++unavailable;
        return;
      }
      ++winners;
      std::string chunk(4096, 'a' + i);
      for (int j = 0; j < 16; ++j) ASSERT_TRUE((*w)->Append(chunk).ok());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(winners + unavailable, kThreads);
  // Every winner appended whole 64 KiB runs of one letter, one after another.
  auto data = ReadSmallFile(IngestDirOf("shared-ref") + "/data", 1 << 30);
  ASSERT_TRUE(data.ok());
  ASSERT_EQ(data->size() % 65536, 0u);
  for (size_t run = 0; run < data->size(); run += 65536) {
    EXPECT_EQ(data->substr(run, 65536), std::string(65536, (*data)[run]));
  }
}

TEST_F(BlobStoreTest, ResumesAfterRestart) {
  std::string full(3 << 20, 'x');
  for (size_t i = 0; i < full.size(); ++i) full[i] = static_cast<char>(i * 7);
  {
    auto w = MustOpen("ns/2/layer-sha256:big", full.size());
    ASSERT_TRUE(w->Append(absl::string_view(full).substr(0, 1 << 20)).ok());
  }
  Reopen();  // A new process: no hash state in memory.
  auto st = store_->GetIngestStatus("ns/2/layer-sha256:big");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->offset, 1 << 20);
  EXPECT_EQ(st->total, static_cast<int64_t>(full.size()));
  auto w = MustOpen("ns/2/layer-sha256:big", full.size());
  EXPECT_EQ(w->offset(), 1 << 20);
  ASSERT_TRUE(w->Append(absl::string_view(full).substr(1 << 20)).ok());
  EXPECT_EQ(w->RunningDigest(), Sha256Digest(full));
  EXPECT_TRUE(w->Commit(full.size(), Sha256Digest(full)).ok());
  EXPECT_EQ(ReadAll(Sha256Digest(full)), full);
}

TEST_F(BlobStoreTest, ResumedIngestIsHashedLazilyAndCommits) {
  // Opening the writer runs inside containerd's metadata transaction, so it
  // must not re-read the data; the first commit does.
  {
    auto w = MustOpen("ns/3/layer-sha256:lazy", 6);
    ASSERT_TRUE(w->Append("lazy!!").ok());
  }
  Reopen();
  auto w = MustOpen("ns/3/layer-sha256:lazy", 6);
  EXPECT_EQ(w->offset(), 6);
  EXPECT_EQ(w->RunningDigest(), "");
  auto info = w->Commit(6, Sha256Digest("lazy!!"));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->digest, Sha256Digest("lazy!!"));
}

TEST_F(BlobStoreTest, ResumeInSameProcessUsesSavedHash) {
  {
    auto w = MustOpen("r", 0);
    ASSERT_TRUE(w->Append("abc").ok());
  }
  auto w = MustOpen("r", 0);
  ASSERT_TRUE(w->Append("def").ok());
  EXPECT_EQ(w->RunningDigest(), Sha256Digest("abcdef"));
}

TEST_F(BlobStoreTest, TruncateRestartsHash) {
  auto w = MustOpen("r", 0);
  ASSERT_TRUE(w->Append("garbage").ok());
  ASSERT_TRUE(w->Truncate().ok());
  ASSERT_TRUE(w->Append("good").ok());
  EXPECT_TRUE(w->Commit(4, Sha256Digest("good")).ok());
}

TEST_F(BlobStoreTest, WritePastTotalIsRejected) {
  auto w = MustOpen("r", 3);
  EXPECT_EQ(w->Append("four").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w->offset(), 0);
  EXPECT_EQ(store_->OpenIngest("q", kMaxBlobSize + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(BlobStoreTest, CommitOfExistingBlobIsOk) {
  std::string digest = Put("a", "same");
  auto w = MustOpen("b", 4);
  ASSERT_TRUE(w->Append("same").ok());
  auto info = w->Commit(4, digest);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, 4);
  EXPECT_EQ(store_->GetIngestStatus("b").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(BlobStoreTest, ReadsAtAndPastEnd) {
  std::string digest = Put("r", "0123456789");
  auto r = store_->OpenBlob(digest);
  ASSERT_TRUE(r.ok());
  char buf[16];
  EXPECT_EQ(*(*r)->ReadAt(8, buf, 16), 2u);
  EXPECT_EQ(std::string(buf, 2), "89");
  EXPECT_EQ(*(*r)->ReadAt(10, buf, 16), 0u);
  EXPECT_EQ(*(*r)->ReadAt(100, buf, 16), 0u);
}

TEST_F(BlobStoreTest, DeleteIsIdempotent) {
  std::string digest = Put("r", "bye");
  auto reader = store_->OpenBlob(digest);
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE(store_->Delete(digest).ok());
  EXPECT_TRUE(store_->Delete(digest).ok());
  EXPECT_EQ(store_->Info(digest).status().code(), absl::StatusCode::kNotFound);
  char buf[3];  // An open reader still sees the bytes.
  EXPECT_EQ(*(*reader)->ReadAt(0, buf, 3), 3u);
}

TEST_F(BlobStoreTest, BadDigestsAreInvalidArgument) {
  for (const char* d :
       {"", "sha256:", "sha256:abc", "md5:00", "sha256:../../../../etc/passwd",
        "sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789"
        "ABCDEF0123456789"}) {
    EXPECT_EQ(store_->Info(d).status().code(),
              absl::StatusCode::kInvalidArgument)
        << d;
    EXPECT_EQ(store_->Delete(d).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(BlobStoreTest, BadRefsAreInvalidArgument) {
  std::string nul("a\0b", 3);
  for (const std::string& ref :
       {std::string(""), std::string("ns/../x"), std::string(".."),
        std::string("a/./b"), nul, std::string("tab\tref"),
        std::string(kMaxRefLength + 1, 'r')}) {
    EXPECT_EQ(store_->OpenIngest(ref, 0).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Abort(ref).code(), absl::StatusCode::kInvalidArgument);
  }
  auto list = store_->ListIngests();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(BlobStoreTest, ListAndListIngests) {
  std::string a = Put("a", "aaa");
  std::string b = Put("b", "bbbb");
  auto w = MustOpen("ns/9/layer-sha256:pending", 10);
  ASSERT_TRUE(w->Append("12").ok());
  auto blobs = store_->List();
  ASSERT_TRUE(blobs.ok());
  std::vector<std::string> digests;
  for (const auto& info : *blobs) digests.push_back(info.digest);
  EXPECT_THAT(digests, UnorderedElementsAre(a, b));
  auto ingests = store_->ListIngests();
  ASSERT_TRUE(ingests.ok());
  ASSERT_EQ(ingests->size(), 1u);
  EXPECT_EQ((*ingests)[0].ref, "ns/9/layer-sha256:pending");
  EXPECT_EQ((*ingests)[0].offset, 2);
  EXPECT_EQ((*ingests)[0].total, 10);
}

TEST_F(BlobStoreTest, AbortRemovesIngest) {
  { MustOpen("r", 0)->Append("x").IgnoreError(); }
  EXPECT_TRUE(store_->Abort("r").ok());
  EXPECT_TRUE(store_->Abort("r").ok());
  EXPECT_EQ(store_->GetIngestStatus("r").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(MustOpen("r", 0)->offset(), 0);
}

// A crash at each commit step leaves either the ingest intact (before the
// rename) or the complete blob (after it); never a torn blob.
class CrashTest : public BlobStoreTest,
                  public ::testing::WithParamInterface<CommitStep> {};

TEST_P(CrashTest, CrashDuringCommitLeavesOldOrCompleteState) {
  std::string data(100000, 'z');
  std::string digest = Sha256Digest(data);
  {
    auto w = MustOpen("ns/1/layer-sha256:c", data.size());
    ASSERT_TRUE(w->Append(data).ok());
    store_->SetCrashPointForTest(GetParam());
    EXPECT_EQ(w->Commit(data.size(), digest).status().code(),
              absl::StatusCode::kAborted);
  }
  Reopen();
  auto info = store_->Info(digest);
  if (GetParam() == CommitStep::kDataSynced) {
    EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
    auto st = store_->GetIngestStatus("ns/1/layer-sha256:c");
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->offset, static_cast<int64_t>(data.size()));
    auto w = MustOpen("ns/1/layer-sha256:c", data.size());
    EXPECT_TRUE(w->Commit(data.size(), digest).ok());
  } else {
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(ReadAll(digest), data);
    // The leftover ingest is harmless: empty, and abortable.
    auto w = MustOpen("ns/1/layer-sha256:c", data.size());
    EXPECT_EQ(w->offset(), 0);
    w.reset();
    EXPECT_TRUE(store_->Abort("ns/1/layer-sha256:c").ok());
  }
}

INSTANTIATE_TEST_SUITE_P(AllSteps, CrashTest,
                         ::testing::Values(CommitStep::kDataSynced,
                                           CommitStep::kRenamed,
                                           CommitStep::kDirSynced,
                                           CommitStep::kBlobFinalized));

TEST_F(BlobStoreTest, CrashMidWriteResumesFromDurablePrefix) {
  // A crash while writing leaves a data file of some length; resuming hashes
  // what is there, so the commit check catches any mismatch.
  { MustOpen("r", 0)->Append("partial").IgnoreError(); }
  std::string data_path = IngestDirOf("r") + "/data";
  ASSERT_EQ(truncate(data_path.c_str(), 4), 0);  // Lost the tail.
  Reopen();
  auto w = MustOpen("r", 0);
  EXPECT_EQ(w->offset(), 4);
  ASSERT_TRUE(w->Append("ial").ok());
  EXPECT_TRUE(w->Commit(7, Sha256Digest("partial")).ok());
}

TEST_F(BlobStoreTest, StrayTempFilesRemovedOnOpen) {
  { MustOpen("r", 0)->Append("x").IgnoreError(); }
  std::string tmp = IngestDirOf("r") + "/updatedat.tmp";
  ASSERT_TRUE(WriteFileAtomic(IngestDirOf("r") + "/junk", "x").ok());
  ASSERT_EQ(rename((IngestDirOf("r") + "/junk").c_str(), tmp.c_str()), 0);
  Reopen();
  EXPECT_NE(access(tmp.c_str(), F_OK), 0);
}

TEST_F(BlobStoreTest, GarbageOnDiskIsSurvivedNotTrusted) {
  // Files a crash, a bad disk or another program may leave behind.
  { MustOpen("ns/1/layer-sha256:g", 10)->Append("12345").IgnoreError(); }
  std::string dir = IngestDirOf("ns/1/layer-sha256:g");
  ASSERT_TRUE(WriteFileAtomic(dir + "/total", "not a number").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/startedat", "yesterday-ish").ok());
  ASSERT_TRUE(MakeDirs(root_ + "/ingest/not-an-ingest").ok());
  ASSERT_TRUE(WriteFileAtomic(root_ + "/blobs/sha256/README", "hi").ok());
  ASSERT_TRUE(WriteFileAtomic(root_ + "/blobs/sha256/" + std::string(64, 'Z'),
                              "bad name")
                  .ok());
  Reopen();
  auto blobs = store_->List();
  ASSERT_TRUE(blobs.ok());
  EXPECT_TRUE(blobs->empty());  // Only files named by a valid digest count.
  auto ingests = store_->ListIngests();
  ASSERT_TRUE(ingests.ok());
  ASSERT_EQ(ingests->size(), 1u);     // The directory without a ref is skipped.
  EXPECT_EQ((*ingests)[0].total, 0);  // Unparsable total: unknown.
  auto w = MustOpen("ns/1/layer-sha256:g", 10);
  EXPECT_EQ(w->offset(), 5);
  EXPECT_EQ(w->total(), 10);  // Rewritten from the writer's own total.
  ASSERT_TRUE(w->Append("67890").ok());
  EXPECT_TRUE(w->Commit(10, Sha256Digest("1234567890")).ok());
}

TEST_F(BlobStoreTest, RelativeRootIsRejected) {
  EXPECT_EQ(BlobStore::Open("relative/dir").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::plugin
