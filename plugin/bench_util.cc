#include "plugin/bench_util.h"

#include <glog/logging.h>
#include <string.h>

#include <algorithm>
#include <random>

namespace shoal::plugin {

double Median(std::vector<double> values) {
  CHECK(!values.empty());
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

std::string WriteRandomBlob(BlobStore& store, const std::string& ref,
                            int64_t size, uint64_t seed) {
  auto w = store.OpenIngest(ref, size);
  CHECK(w.ok()) << w.status();
  std::mt19937_64 rng(seed);
  std::string chunk(1 << 20, '\0');
  for (int64_t done = 0; done < size; done += chunk.size()) {
    for (size_t i = 0; i < chunk.size(); i += 8) {
      uint64_t r = rng();
      memcpy(&chunk[i], &r, 8);
    }
    CHECK((*w)->Append(absl::string_view(chunk).substr(
                           0, std::min<int64_t>(chunk.size(), size - done)))
              .ok());
  }
  auto info = (*w)->Commit(size, "");
  CHECK(info.ok()) << info.status();
  return info->digest;
}

}  // namespace shoal::plugin
