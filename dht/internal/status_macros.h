// Early-return helpers for absl::Status inside dht/, which must not depend on
// plugin/. Abseil 20220623 has no status macros of its own.
#ifndef SHOAL_DHT_INTERNAL_STATUS_MACROS_H_
#define SHOAL_DHT_INTERNAL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns `expr` (an absl::Status) from the enclosing function unless OK.
#define DHT_RETURN_IF_ERROR(expr)              \
  do {                                         \
    const ::absl::Status dht_status_ = (expr); \
    if (!dht_status_.ok()) return dht_status_; \
  } while (0)

#define DHT_CONCAT_INNER_(a, b) a##b
#define DHT_CONCAT_(a, b) DHT_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>): returns its status on error, else
// moves the value into `lhs`, which may be a declaration.
#define DHT_ASSIGN_OR_RETURN(lhs, rexpr) \
  DHT_ASSIGN_OR_RETURN_IMPL_(DHT_CONCAT_(dht_statusor_, __LINE__), lhs, rexpr)

#define DHT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)   \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // SHOAL_DHT_INTERNAL_STATUS_MACROS_H_
