// Helpers shared by plugin/'s benchmark binaries. Benchmarks only: failures
// CHECK-fail, since a broken setup has no figure worth printing.
#ifndef SHOAL_PLUGIN_BENCH_UTIL_H_
#define SHOAL_PLUGIN_BENCH_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "plugin/store.h"

namespace shoal::plugin {

// The median of `values` (the upper one for an even count); not empty.
double Median(std::vector<double> values);

// Commits `size` pseudo-random bytes (deterministic from `seed`) to `store`
// through an ingest named `ref`; returns the blob's digest.
std::string WriteRandomBlob(BlobStore& store, const std::string& ref,
                            int64_t size, uint64_t seed);

}  // namespace shoal::plugin

#endif  // SHOAL_PLUGIN_BENCH_UTIL_H_
