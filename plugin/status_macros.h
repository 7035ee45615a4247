// Early-return helpers for absl::Status, which Abseil 20220623 lacks.
#ifndef SHOAL_PLUGIN_STATUS_MACROS_H_
#define SHOAL_PLUGIN_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns `expr`'s status from the enclosing function when it is not OK.
#define SHOAL_RETURN_IF_ERROR(expr)                \
  do {                                             \
    const ::absl::Status shoal_status_ = (expr);   \
    if (!shoal_status_.ok()) return shoal_status_; \
  } while (0)

#define SHOAL_STATUS_CONCAT_INNER_(a, b) a##b
#define SHOAL_STATUS_CONCAT_(a, b) SHOAL_STATUS_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status,
// otherwise moves the value into `lhs`, which may be a declaration.
#define SHOAL_ASSIGN_OR_RETURN(lhs, rexpr) \
  SHOAL_ASSIGN_OR_RETURN_IMPL_(            \
      SHOAL_STATUS_CONCAT_(shoal_statusor_, __LINE__), lhs, rexpr)

#define SHOAL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // SHOAL_PLUGIN_STATUS_MACROS_H_
