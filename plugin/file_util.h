// Small POSIX file helpers shared by the store: errno to absl::Status, whole
// small files, directory sync. Every function returns a Status naming the
// path; none logs.
#ifndef SHOAL_PLUGIN_FILE_UTIL_H_
#define SHOAL_PLUGIN_FILE_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace shoal::plugin {

// Maps errno `err` from `op` on `path` to the closest absl code: ENOENT is
// NOT_FOUND, ENOSPC/EDQUOT RESOURCE_EXHAUSTED, EEXIST ALREADY_EXISTS, EACCES
// PERMISSION_DENIED, everything else INTERNAL.
absl::Status ErrnoToStatus(int err, absl::string_view op,
                           absl::string_view path);

// Reads a small file (at most `max_bytes`) into a string.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          size_t max_bytes = 64 * 1024);

// Writes `content` to `path` through a temporary file and rename, so readers
// see the old or the new content. Not synced: callers sync what must survive.
absl::Status WriteFileAtomic(const std::string& path,
                             absl::string_view content);

// fsyncs a directory so renames and creations in it are durable.
absl::Status SyncDir(const std::string& path);

// mkdir -p with mode 0755.
absl::Status MakeDirs(const std::string& path);

// Names of the entries in a directory, without "." and "..", in no order.
absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path);

// Removes a directory tree; OK when it does not exist.
absl::Status RemoveTree(const std::string& path);

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_FILE_UTIL_H_
