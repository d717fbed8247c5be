// Attention replica address lists for router-svc: expands the --attention spec into concrete
// "host:port" addresses. Same syntax as attention-svc's --expert-shards: "host:port,host:port",
// "dns:NAME:PORT" (every address NAME resolves to, e.g. a headless Kubernetes Service) or "@FILE".
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace expertmesh::router_service {

// INVALID_ARGUMENT for an empty list or a malformed entry, NOT_FOUND for an unreadable @FILE,
// UNAVAILABLE when a dns: name does not resolve. Duplicates are removed, order is kept.
absl::StatusOr<std::vector<std::string>> ResolveReplicaAddresses(const std::string& spec);

}  // namespace expertmesh::router_service
