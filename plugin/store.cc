#include "plugin/store.h"

#include <errno.h>
#include <fcntl.h>
#include <glog/logging.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "plugin/file_util.h"
#include "plugin/status_macros.h"

namespace shoal::plugin {
namespace {

constexpr char kBlobsDir[] = "/blobs/sha256";
constexpr char kIngestDir[] = "/ingest";

// Rewrite the updatedat file at most this often while data streams in; the
// in-memory value is exact, the file only matters after a restart.
constexpr absl::Duration kUpdatedAtFileInterval = absl::Seconds(1);

absl::Time TimespecToTime(const struct timespec& ts) {
  return absl::TimeFromTimespec(ts);
}

std::string FormatTimestamp(absl::Time t) {
  // Go's time.Time.UnmarshalText (containerd) reads RFC 3339 with fraction.
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}

absl::Time ParseTimestamp(absl::string_view text, absl::Time fallback) {
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full,
                      std::string(absl::StripAsciiWhitespace(text)), &t,
                      &err)) {
    return t;
  }
  return fallback;
}

absl::StatusOr<int64_t> FileSize(int fd, absl::string_view path) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoToStatus(errno, "stat", path);
  return static_cast<int64_t>(st.st_size);
}

// Writes all of `data` at `offset`.
absl::Status PwriteAll(int fd, absl::string_view data, int64_t offset,
                       absl::string_view path) {
  while (!data.empty()) {
    ssize_t n = pwrite(fd, data.data(), data.size(), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "write", path);
    }
    data.remove_prefix(n);
    offset += n;
  }
  return absl::OkStatus();
}

// Hashes the first `size` bytes of `fd`; used when resuming an ingest whose
// hash state is not in memory (after a restart).
// TODO: the hash state is not persisted, so resuming a large ingest after a
// restart re-reads its data once (about 0.7 s per GiB at 1.4 GB/s SHA-256),
// on the first WRITE or COMMIT after the restart.
absl::StatusOr<Sha256> HashFile(int fd, int64_t size, absl::string_view path) {
  Sha256 hash;
  std::string buf(1 << 20, '\0');
  int64_t offset = 0;
  while (offset < size) {
    size_t want = std::min<int64_t>(buf.size(), size - offset);
    ssize_t n = pread(fd, buf.data(), want, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "read", path);
    }
    if (n == 0) break;
    hash.Update(absl::string_view(buf.data(), n));
    offset += n;
  }
  return hash;
}

}  // namespace

absl::Status ValidateRef(absl::string_view ref) {
  if (ref.empty()) return absl::InvalidArgumentError("ref is empty");
  if (ref.size() > kMaxRefLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ref is ", ref.size(), " bytes, longer than ", kMaxRefLength));
  }
  for (char c : ref) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("ref \"", absl::CHexEscape(ref.substr(0, 200)),
                       "\" contains a control byte"));
    }
  }
  for (absl::string_view seg : absl::StrSplit(ref, '/')) {
    if (seg == "." || seg == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("ref \"", ref.substr(0, 200), "\" contains a \"", seg,
                       "\" path segment"));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// BlobReader

BlobReader::~BlobReader() { close(fd_); }

absl::StatusOr<size_t> BlobReader::ReadAt(int64_t offset, char* buf,
                                          size_t n) const {
  size_t done = 0;
  while (done < n) {
    ssize_t got = pread(fd_, buf + done, n - done, offset + done);
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "read", "blob");
    }
    if (got == 0) break;
    done += got;
  }
  return done;
}

// ---------------------------------------------------------------------------
// IngestWriter

IngestWriter::IngestWriter(BlobStore* store, std::string ref, std::string dir,
                           int fd, int64_t offset, int64_t total,
                           absl::optional<Sha256> hash, absl::Time started_at)
    : store_(store),
      ref_(std::move(ref)),
      dir_(std::move(dir)),
      fd_(fd),
      offset_(offset),
      total_(total),
      hash_(hash.value_or(Sha256())),
      hash_pending_(!hash.has_value() && offset > 0),
      started_at_(started_at),
      updated_at_(absl::Now()) {}

IngestWriter::~IngestWriter() {
  if (fd_ >= 0) {
    if (!committed_) {
      // Keep the file timestamp exact for whoever resumes after a restart.
      WriteTimestamp("updatedat", updated_at_).IgnoreError();
    }
    close(fd_);
  }
  if (committed_ || hash_pending_) {
    store_->Release(ref_, nullptr);
  } else {
    BlobStore::SavedHash saved{offset_, hash_};
    store_->Release(ref_, &saved);
  }
}

absl::Status IngestWriter::EnsureHash() {
  if (!hash_pending_) return absl::OkStatus();
  SHOAL_ASSIGN_OR_RETURN(hash_, HashFile(fd_, offset_, dir_));
  hash_pending_ = false;
  return absl::OkStatus();
}

IngestStatus IngestWriter::Status() const {
  IngestStatus st;
  st.ref = ref_;
  st.offset = offset_;
  st.total = total_;
  st.started_at = started_at_;
  st.updated_at = updated_at_;
  return st;
}

absl::Status IngestWriter::CheckOpen() const {
  if (committed_) {
    return absl::FailedPreconditionError(
        absl::StrCat("ingest ", ref_, " is already committed"));
  }
  return absl::OkStatus();
}

absl::Status IngestWriter::WriteTimestamp(const char* name, absl::Time t) {
  return WriteFileAtomic(absl::StrCat(dir_, "/", name), FormatTimestamp(t));
}

absl::Status IngestWriter::SetTotal(int64_t total) {
  SHOAL_RETURN_IF_ERROR(CheckOpen());
  if (total <= 0 || total == total_) return absl::OkStatus();
  if (total > kMaxBlobSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "total ", total, " exceeds the maximum blob size ", kMaxBlobSize));
  }
  if (total < offset_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "total ", total, " is below the ", offset_, " bytes already written"));
  }
  SHOAL_RETURN_IF_ERROR(
      WriteFileAtomic(absl::StrCat(dir_, "/total"), absl::StrCat(total)));
  total_ = total;
  return absl::OkStatus();
}

absl::Status IngestWriter::Truncate() {
  SHOAL_RETURN_IF_ERROR(CheckOpen());
  if (ftruncate(fd_, 0) != 0) return ErrnoToStatus(errno, "truncate", dir_);
  offset_ = 0;
  hash_.Reset();
  hash_pending_ = false;
  updated_at_ = absl::Now();
  return absl::OkStatus();
}

absl::Status IngestWriter::Discard() {
  SHOAL_RETURN_IF_ERROR(CheckOpen());
  committed_ = true;
  return RemoveTree(dir_);
}

absl::Status IngestWriter::Append(absl::string_view data) {
  SHOAL_RETURN_IF_ERROR(CheckOpen());
  if (data.empty()) return absl::OkStatus();
  int64_t end = offset_ + static_cast<int64_t>(data.size());
  if (total_ > 0 && end > total_) {
    return absl::InvalidArgumentError(
        absl::StrCat("write of ", data.size(), " bytes at offset ", offset_,
                     " passes the expected total ", total_));
  }
  if (end > kMaxBlobSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("write passes the maximum blob size ", kMaxBlobSize));
  }
  SHOAL_RETURN_IF_ERROR(EnsureHash());
  absl::Status st = PwriteAll(fd_, data, offset_, dir_);
  if (!st.ok()) {
    // Drop the partial write so data and hash stay in step.
    if (ftruncate(fd_, offset_) != 0) {
      LOG(ERROR) << "store: cannot cut back failed write ref=" << ref_
                 << " error=" << strerror(errno);
    }
    return st;
  }
  hash_.Update(data);
  offset_ = end;
  absl::Time now = absl::Now();
  if (now - updated_at_ > kUpdatedAtFileInterval) {
    WriteTimestamp("updatedat", now).IgnoreError();
  }
  updated_at_ = now;
  return absl::OkStatus();
}

absl::StatusOr<BlobInfo> IngestWriter::Commit(int64_t size,
                                              absl::string_view expected) {
  SHOAL_RETURN_IF_ERROR(CheckOpen());
  if (size > 0 && size != offset_) {
    return absl::FailedPreconditionError(absl::StrCat("unexpected commit size ",
                                                      offset_, ", expected ",
                                                      size, " ref=", ref_));
  }
  SHOAL_RETURN_IF_ERROR(EnsureHash());
  std::string digest = hash_.Digest();
  if (!expected.empty()) {
    SHOAL_RETURN_IF_ERROR(ValidateDigest(expected));
    if (expected != digest) {
      return absl::FailedPreconditionError(
          absl::StrCat("unexpected commit digest ", digest, ", expected ",
                       expected, " ref=", ref_));
    }
  }

  // Make the bytes durable before the rename can make them visible.
  if (fsync(fd_) != 0) return ErrnoToStatus(errno, "fsync", dir_);
  if (store_->ShouldCrash(CommitStep::kDataSynced)) {
    return absl::AbortedError("simulated crash after data sync");
  }

  std::string blob = store_->BlobPath(digest);
  std::string blobs_dir = store_->root_ + kBlobsDir;
  SHOAL_RETURN_IF_ERROR(MakeDirs(blobs_dir));
  absl::StatusOr<BlobInfo> existing = store_->Info(digest);
  if (existing.ok()) {
    // Same bytes already committed (another ref won the race): keep theirs.
    committed_ = true;
    SHOAL_RETURN_IF_ERROR(RemoveTree(dir_));
    return existing;
  }

  std::string data_path = dir_ + "/data";
  if (rename(data_path.c_str(), blob.c_str()) != 0) {
    return ErrnoToStatus(errno, "rename", data_path);
  }
  if (store_->ShouldCrash(CommitStep::kRenamed)) {
    return absl::AbortedError("simulated crash after rename");
  }
  SHOAL_RETURN_IF_ERROR(SyncDir(blobs_dir));
  if (store_->ShouldCrash(CommitStep::kDirSynced)) {
    return absl::AbortedError("simulated crash after directory sync");
  }

  // As containerd's store does: times set to the commit time, then
  // read-only, so nothing rewrites a blob in place.
  absl::Time now = absl::Now();
  struct timespec times[2] = {absl::ToTimespec(now), absl::ToTimespec(now)};
  if (futimens(fd_, times) != 0) return ErrnoToStatus(errno, "utimes", blob);
  if (fchmod(fd_, 0444) != 0) return ErrnoToStatus(errno, "chmod", blob);
  committed_ = true;
  if (store_->ShouldCrash(CommitStep::kBlobFinalized)) {
    return absl::AbortedError("simulated crash before ingest removal");
  }
  SHOAL_RETURN_IF_ERROR(RemoveTree(dir_));

  BlobInfo info;
  info.digest = std::move(digest);
  info.size = offset_;
  info.created_at = now;
  info.updated_at = now;
  return info;
}

// ---------------------------------------------------------------------------
// BlobStore

BlobStore::BlobStore(std::string root) : root_(std::move(root)) {}

BlobStore::~BlobStore() {
  absl::MutexLock lock(&mu_);
  DCHECK(locked_refs_.empty()) << "store destroyed with live writers";
}

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(
    const std::string& root) {
  if (root.empty() || root[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "store root must be an absolute path, got \"", root, "\""));
  }
  std::string clean(absl::StripSuffix(root, "/"));
  SHOAL_RETURN_IF_ERROR(MakeDirs(clean + kBlobsDir));
  SHOAL_RETURN_IF_ERROR(MakeDirs(clean + kIngestDir));
  std::unique_ptr<BlobStore> store(new BlobStore(clean));
  SHOAL_RETURN_IF_ERROR(store->CleanStrayFiles());
  return store;
}

std::string BlobStore::BlobPath(absl::string_view digest) const {
  return absl::StrCat(root_, kBlobsDir, "/",
                      digest.substr(kSha256Prefix.size()));
}

std::string BlobStore::IngestDir(absl::string_view ref) const {
  // containerd names ingest directories by the sha256 of the ref string.
  return absl::StrCat(root_, kIngestDir, "/",
                      Sha256Digest(ref).substr(kSha256Prefix.size()));
}

absl::Status BlobStore::CleanStrayFiles() {
  std::string ingest = root_ + kIngestDir;
  SHOAL_ASSIGN_OR_RETURN(std::vector<std::string> dirs, ListDirectory(ingest));
  int removed = 0;
  for (const std::string& name : dirs) {
    for (const char* file : {"startedat", "updatedat", "total", "ref"}) {
      std::string tmp = absl::StrCat(ingest, "/", name, "/", file, ".tmp");
      if (unlink(tmp.c_str()) == 0) ++removed;
    }
  }
  if (removed > 0) {
    LOG(INFO) << "store: removed stray temporary files count=" << removed;
  }
  return absl::OkStatus();
}

absl::StatusOr<BlobInfo> BlobStore::Info(absl::string_view digest) const {
  SHOAL_RETURN_IF_ERROR(ValidateDigest(digest));
  std::string path = BlobPath(digest);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("content ", digest, " not found"));
    }
    return ErrnoToStatus(errno, "stat", path);
  }
  BlobInfo info;
  info.digest = std::string(digest);
  info.size = st.st_size;
  info.created_at = TimespecToTime(st.st_mtim);
  info.updated_at = TimespecToTime(st.st_atim);
  return info;
}

absl::StatusOr<std::unique_ptr<BlobReader>> BlobStore::OpenBlob(
    absl::string_view digest) const {
  SHOAL_RETURN_IF_ERROR(ValidateDigest(digest));
  std::string path = BlobPath(digest);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("content ", digest, " not found"));
    }
    return ErrnoToStatus(errno, "open", path);
  }
  absl::StatusOr<int64_t> size = FileSize(fd, path);
  if (!size.ok()) {
    close(fd);
    return size.status();
  }
  return std::make_unique<BlobReader>(fd, *size);
}

absl::StatusOr<std::vector<BlobInfo>> BlobStore::List() const {
  SHOAL_ASSIGN_OR_RETURN(std::vector<std::string> names,
                         ListDirectory(root_ + kBlobsDir));
  std::vector<BlobInfo> out;
  for (const std::string& name : names) {
    std::string digest = absl::StrCat(kSha256Prefix, name);
    if (!ValidateDigest(digest).ok()) continue;
    absl::StatusOr<BlobInfo> info = Info(digest);
    if (info.ok()) out.push_back(*std::move(info));  // Else deleted meanwhile.
  }
  return out;
}

absl::Status BlobStore::Delete(absl::string_view digest) {
  SHOAL_RETURN_IF_ERROR(ValidateDigest(digest));
  std::string path = BlobPath(digest);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoToStatus(errno, "unlink", path);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<IngestWriter>> BlobStore::OpenIngest(
    absl::string_view ref, int64_t total) {
  SHOAL_RETURN_IF_ERROR(ValidateRef(ref));
  if (total > kMaxBlobSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "total ", total, " exceeds the maximum blob size ", kMaxBlobSize));
  }
  std::string ref_str(ref);
  absl::optional<SavedHash> saved;
  {
    absl::MutexLock lock(&mu_);
    if (!locked_refs_.insert(ref_str).second) {
      return absl::UnavailableError(
          absl::StrCat("ref ", ref_str, " locked by another writer"));
    }
    auto it = saved_hashes_.find(ref_str);
    if (it != saved_hashes_.end()) saved = it->second;
  }
  // From here on the ref is ours; undo the lock on any failure.
  struct Unlock {
    BlobStore* store;
    const std::string* ref;
    bool armed = true;
    ~Unlock() {
      if (!armed) return;
      absl::MutexLock lock(&store->mu_);
      store->locked_refs_.erase(*ref);
    }
  } unlock{this, &ref_str};

  std::string dir = IngestDir(ref);
  SHOAL_ASSIGN_OR_RETURN(absl::Time started_at, PrepareIngestDir(dir, ref));
  SHOAL_ASSIGN_OR_RETURN(int64_t recorded_total, RecordTotal(dir, total));

  std::string data_path = dir + "/data";
  int fd = open(data_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "open", data_path);
  absl::Status st = absl::OkStatus();
  int64_t offset = 0;
  if (absl::StatusOr<int64_t> size = FileSize(fd, data_path); size.ok()) {
    offset = *size;
  } else {
    st = size.status();
  }
  if (st.ok() && total > 0 && offset > total) {
    LOG(WARNING) << "store: discarding ingest data longer than its total ref="
                 << ref << " offset=" << offset << " total=" << total;
    if (ftruncate(fd, 0) != 0) st = ErrnoToStatus(errno, "truncate", data_path);
    offset = 0;
  }
  if (!st.ok()) {
    close(fd);
    return st;
  }

  // The hash state is known for an empty ingest or one released by a writer
  // of this process; otherwise the writer rebuilds it when first needed.
  absl::optional<Sha256> hash;
  if (offset == 0) {
    hash.emplace();
  } else if (saved.has_value() && saved->offset == offset) {
    hash = saved->hash;
  }
  unlock.armed = false;
  return std::unique_ptr<IngestWriter>(
      new IngestWriter(this, ref_str, std::move(dir), fd, offset,
                       recorded_total, std::move(hash), started_at));
}

absl::StatusOr<absl::Time> BlobStore::PrepareIngestDir(
    const std::string& dir, absl::string_view ref) const {
  SHOAL_RETURN_IF_ERROR(MakeDirs(dir));
  absl::Time now = absl::Now();
  absl::StatusOr<std::string> stored_ref = ReadSmallFile(dir + "/ref");
  if (stored_ref.ok() && *stored_ref == ref) {
    absl::StatusOr<std::string> text = ReadSmallFile(dir + "/startedat");
    return text.ok() ? ParseTimestamp(*text, now) : now;
  }
  // A new ingest, or one whose creation a crash interrupted: the ref file is
  // written last, so its presence means the directory is complete.
  SHOAL_RETURN_IF_ERROR(
      WriteFileAtomic(dir + "/startedat", FormatTimestamp(now)));
  SHOAL_RETURN_IF_ERROR(
      WriteFileAtomic(dir + "/updatedat", FormatTimestamp(now)));
  SHOAL_RETURN_IF_ERROR(WriteFileAtomic(dir + "/ref", ref));
  return now;
}

absl::StatusOr<int64_t> BlobStore::RecordTotal(const std::string& dir,
                                               int64_t total) const {
  int64_t recorded = 0;
  absl::StatusOr<std::string> text = ReadSmallFile(dir + "/total");
  if (text.ok()) absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &recorded);
  if (total > 0 && total != recorded) {
    SHOAL_RETURN_IF_ERROR(WriteFileAtomic(dir + "/total", absl::StrCat(total)));
    recorded = total;
  }
  return recorded;
}

absl::StatusOr<IngestStatus> BlobStore::ReadIngestStatus(
    const std::string& dir) const {
  SHOAL_ASSIGN_OR_RETURN(std::string ref, ReadSmallFile(dir + "/ref"));
  IngestStatus st;
  st.ref = std::move(ref);
  struct stat data;
  if (stat((dir + "/data").c_str(), &data) == 0) {
    st.offset = data.st_size;
  } else if (errno != ENOENT) {
    return ErrnoToStatus(errno, "stat", dir + "/data");
  }
  absl::StatusOr<std::string> total = ReadSmallFile(dir + "/total");
  if (total.ok()) {
    absl::SimpleAtoi(absl::StripAsciiWhitespace(*total), &st.total);
  }
  absl::Time fallback = absl::UnixEpoch();
  absl::StatusOr<std::string> started = ReadSmallFile(dir + "/startedat");
  if (started.ok()) st.started_at = ParseTimestamp(*started, fallback);
  absl::StatusOr<std::string> updated = ReadSmallFile(dir + "/updatedat");
  if (updated.ok()) st.updated_at = ParseTimestamp(*updated, fallback);
  return st;
}

absl::StatusOr<IngestStatus> BlobStore::GetIngestStatus(
    absl::string_view ref) const {
  SHOAL_RETURN_IF_ERROR(ValidateRef(ref));
  absl::StatusOr<IngestStatus> st = ReadIngestStatus(IngestDir(ref));
  if (absl::IsNotFound(st.status()) || (st.ok() && st->ref != ref)) {
    return absl::NotFoundError(absl::StrCat("ingest ", ref, " not found"));
  }
  return st;
}

absl::StatusOr<std::vector<IngestStatus>> BlobStore::ListIngests() const {
  std::string ingest = root_ + kIngestDir;
  SHOAL_ASSIGN_OR_RETURN(std::vector<std::string> dirs, ListDirectory(ingest));
  std::vector<IngestStatus> out;
  for (const std::string& name : dirs) {
    absl::StatusOr<IngestStatus> st =
        ReadIngestStatus(absl::StrCat(ingest, "/", name));
    if (st.ok()) {
      out.push_back(*std::move(st));
    } else {
      VLOG(1) << "store: skipping unreadable ingest dir=" << name
              << " error=" << st.status();
    }
  }
  return out;
}

absl::Status BlobStore::Abort(absl::string_view ref) {
  SHOAL_RETURN_IF_ERROR(ValidateRef(ref));
  {
    absl::MutexLock lock(&mu_);
    saved_hashes_.erase(std::string(ref));
  }
  return RemoveTree(IngestDir(ref));
}

void BlobStore::Release(const std::string& ref, const SavedHash* saved) {
  absl::MutexLock lock(&mu_);
  locked_refs_.erase(ref);
  if (saved == nullptr) {
    saved_hashes_.erase(ref);
  } else {
    saved_hashes_.insert_or_assign(ref, *saved);
  }
}

}  // namespace shoal::plugin
