// BlobStore keeps committed blobs and in-progress ingests on disk in exactly
// the layout of containerd 1.6's built-in content store
// (content/local/store.go), so a node can switch between that store and shoald
// on the same directory without losing anything:
//
//   <root>/blobs/sha256/<hex>              committed blob, read-only
//   <root>/ingest/<sha256(ref)>/ref        the ingest's ref string
//   <root>/ingest/<sha256(ref)>/data       bytes written so far
//   <root>/ingest/<sha256(ref)>/total      expected size, when known
//   <root>/ingest/<sha256(ref)>/startedat  RFC 3339 timestamps
//   <root>/ingest/<sha256(ref)>/updatedat
//
// Commits are crash-safe: the data is synced, its size and digest checked,
// then it is renamed into blobs/ (atomic) and the directory synced. A crash at
// any point leaves either the ingest as it was or the complete, verified blob.
//
// Thread-safe. One IngestWriter per ref at a time; any number of readers.
#ifndef SHOAL_PLUGIN_STORE_H_
#define SHOAL_PLUGIN_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "plugin/sha256.h"

namespace shoal::plugin {

// Largest blob the store accepts (1 TiB). Far above any real image layer;
// anything larger is a bug or an attack, not content.
inline constexpr int64_t kMaxBlobSize = int64_t{1} << 40;

// Longest ref accepted. containerd's refs are "<ns>/<seq>/<kind>-sha256:<hex>"
// or "<ns>/<seq>/<image name>@<digest>", well under this.
inline constexpr size_t kMaxRefLength = 4096;

struct BlobInfo {
  std::string digest;
  int64_t size = 0;
  absl::Time created_at;
  absl::Time updated_at;
};

struct IngestStatus {
  std::string ref;
  int64_t offset = 0;
  int64_t total = 0;  // 0 when unknown.
  absl::Time started_at;
  absl::Time updated_at;
};

// Steps of a commit at which tests can simulate a crash (see
// BlobStore::SetCrashPointForTest).
enum class CommitStep {
  kDataSynced,     // data fsynced, not yet renamed
  kRenamed,        // data renamed into blobs/, directory not yet synced
  kDirSynced,      // blobs/sha256 synced, times and mode not yet set
  kBlobFinalized,  // times and mode set, ingest directory not yet removed
};

// OK when `ref` is usable as an ingest ref: non-empty, at most kMaxRefLength
// bytes, no NUL or other control bytes, and no "." or ".." path segment.
// Otherwise INVALID_ARGUMENT saying why.
absl::Status ValidateRef(absl::string_view ref);

// A committed blob opened for reading. Reads use pread on one descriptor, so
// concurrent ReadAt calls are safe. The blob stays readable while open even if
// it is deleted meanwhile.
class BlobReader {
 public:
  BlobReader(int fd, int64_t size) : fd_(fd), size_(size) {}
  ~BlobReader();
  BlobReader(const BlobReader&) = delete;
  BlobReader& operator=(const BlobReader&) = delete;

  int64_t size() const { return size_; }
  int fd() const { return fd_; }

  // Reads up to `n` bytes at `offset` into `buf`; returns the count, which is
  // less than `n` only at the end of the blob. INTERNAL on I/O errors.
  absl::StatusOr<size_t> ReadAt(int64_t offset, char* buf, size_t n) const;

 private:
  const int fd_;
  const int64_t size_;
};

class BlobStore;

// Exclusive access to one ingest. Destroying it releases the ref and keeps
// the data written so far, so a later writer resumes where this one stopped.
class IngestWriter {
 public:
  ~IngestWriter();
  IngestWriter(const IngestWriter&) = delete;
  IngestWriter& operator=(const IngestWriter&) = delete;

  const std::string& ref() const { return ref_; }
  int64_t offset() const { return offset_; }
  int64_t total() const { return total_; }
  // True once Commit() succeeded or Discard() ran.
  bool committed() const { return committed_; }
  IngestStatus Status() const;
  // Digest of the bytes written so far; empty while the data of an ingest
  // resumed after a restart has not been re-hashed yet (see EnsureHash).
  std::string RunningDigest() const {
    return hash_pending_ ? std::string() : hash_.Digest();
  }

  // Records the expected size (> 0) for validation at commit; <= 0 is
  // ignored. INVALID_ARGUMENT above kMaxBlobSize or below the current offset.
  absl::Status SetTotal(int64_t total);

  // Discards all data written so far.
  absl::Status Truncate();

  // Appends `data`. INVALID_ARGUMENT when it would pass the known total or
  // kMaxBlobSize; INTERNAL (or RESOURCE_EXHAUSTED for a full disk) on I/O
  // errors, after which the ingest is cut back to its last good offset.
  absl::Status Append(absl::string_view data);

  // Commits the data as a blob. `size` > 0 must equal the data's size and a
  // non-empty `expected` its digest, else FAILED_PRECONDITION and the ingest
  // is kept. When the blob already exists the ingest is removed and the
  // existing blob's info returned (OK). After a successful commit the writer
  // is finished: further calls fail with FAILED_PRECONDITION.
  absl::StatusOr<BlobInfo> Commit(int64_t size, absl::string_view expected);

  // Removes the ingest and its data and finishes the writer, for an ingest
  // made redundant because its blob was committed by other means (a
  // concurrent fill from a peer).
  absl::Status Discard();

 private:
  friend class BlobStore;
  // `hash` is the state over the first `offset` bytes, or nullopt when it
  // must be rebuilt from the data file.
  IngestWriter(BlobStore* store, std::string ref, std::string dir, int fd,
               int64_t offset, int64_t total, absl::optional<Sha256> hash,
               absl::Time started_at);

  // Rebuilds the hash of a resumed ingest by reading its data, once, on the
  // first call that needs it. Deferred so that opening the writer (the first
  // STAT, inside containerd's metadata transaction) stays fast.
  absl::Status EnsureHash();
  absl::Status WriteTimestamp(const char* name, absl::Time t);
  absl::Status CheckOpen() const;

  BlobStore* const store_;  // Not owned; outlives this writer.
  const std::string ref_;
  const std::string dir_;
  int fd_;
  int64_t offset_;
  int64_t total_;
  Sha256 hash_;
  bool hash_pending_;
  absl::Time started_at_;
  absl::Time updated_at_;
  bool committed_ = false;
};

class BlobStore {
 public:
  // Opens (creating if needed) a store rooted at `root`, an absolute path.
  // Removes stray temporary files left by a crash.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(
      const std::string& root);

  ~BlobStore();
  BlobStore(const BlobStore&) = delete;
  BlobStore& operator=(const BlobStore&) = delete;

  const std::string& root() const { return root_; }

  // INVALID_ARGUMENT for a malformed digest, NOT_FOUND when absent.
  absl::StatusOr<BlobInfo> Info(absl::string_view digest) const;
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenBlob(
      absl::string_view digest) const;
  // Every committed blob. Files in blobs/sha256 that are not named by a valid
  // digest are skipped.
  absl::StatusOr<std::vector<BlobInfo>> List() const;
  // Removes a blob; OK when it was already absent.
  absl::Status Delete(absl::string_view digest);

  // Opens the ingest for `ref`, creating it or resuming its data. `total` > 0
  // is recorded as the expected size. UNAVAILABLE when another writer holds
  // the ref; INVALID_ARGUMENT for a bad ref or total.
  absl::StatusOr<std::unique_ptr<IngestWriter>> OpenIngest(
      absl::string_view ref, int64_t total);
  // NOT_FOUND for an unknown ref.
  absl::StatusOr<IngestStatus> GetIngestStatus(absl::string_view ref) const;
  absl::StatusOr<std::vector<IngestStatus>> ListIngests() const;
  // Removes an ingest and its data; OK when it did not exist.
  absl::Status Abort(absl::string_view ref);

  // Tests only: makes the next commits stop right after `step`, returning
  // ABORTED and leaving disk state exactly as a crash there would.
  void SetCrashPointForTest(CommitStep step) { crash_point_ = step; }

 private:
  friend class IngestWriter;
  explicit BlobStore(std::string root);

  std::string BlobPath(absl::string_view digest) const;
  std::string IngestDir(absl::string_view ref) const;
  absl::StatusOr<IngestStatus> ReadIngestStatus(const std::string& dir) const;
  // Creates the metadata files of ingest directory `dir` for `ref`, or reads
  // them back when they exist; returns the ingest's start time.
  absl::StatusOr<absl::Time> PrepareIngestDir(const std::string& dir,
                                              absl::string_view ref) const;
  // Records `total` (> 0) as the expected size when it differs from what the
  // directory holds; returns the total in force (0 when unknown).
  absl::StatusOr<int64_t> RecordTotal(const std::string& dir,
                                      int64_t total) const;
  absl::Status CleanStrayFiles();
  bool ShouldCrash(CommitStep step) const {
    return crash_point_.has_value() && *crash_point_ == step;
  }
  // Called by IngestWriter when it goes away: frees the ref and keeps the
  // hash state `saved` for the next writer, or forgets it when null.
  struct SavedHash;
  void Release(const std::string& ref, const SavedHash* saved);

  const std::string root_;
  absl::optional<CommitStep> crash_point_;

  mutable absl::Mutex mu_;
  // Refs with a live IngestWriter.
  absl::flat_hash_set<std::string> locked_refs_ ABSL_GUARDED_BY(mu_);
  // Hash state of released ingests, so resuming does not re-read the data.
  struct SavedHash {
    int64_t offset;
    Sha256 hash;
  };
  absl::flat_hash_map<std::string, SavedHash> saved_hashes_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_STORE_H_
