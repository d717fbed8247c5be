// Status plumbing shared by the whole engine: early-return macros for absl::Status and
// absl::StatusOr, so errors travel as values (never exceptions) across module boundaries.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define EXPERTMESH_CONCAT_INNER(a, b) a##b
#define EXPERTMESH_CONCAT(a, b) EXPERTMESH_CONCAT_INNER(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if not OK.
#define EXPERTMESH_RETURN_IF_ERROR(expr)           \
  do {                                             \
    ::absl::Status expertmesh_status_ = (expr);    \
    if (!expertmesh_status_.ok()) return expertmesh_status_; \
  } while (0)

// `EXPERTMESH_ASSIGN_OR_RETURN(auto x, Fn());` declares x from an OK StatusOr, else returns its status.
#define EXPERTMESH_ASSIGN_OR_RETURN(lhs, expr) \
  EXPERTMESH_ASSIGN_OR_RETURN_IMPL(EXPERTMESH_CONCAT(expertmesh_statusor_, __LINE__), lhs, expr)
#define EXPERTMESH_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                                     \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = std::move(statusor).value()
