// Mapping between the engine's absl::Status and gRPC's status at the service edge: the codes are
// the same numbers (both follow google.rpc.Code), the message travels unchanged.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace expertmesh::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace expertmesh::rpc
