// ExpertAdminServiceImpl: the gRPC face of one shard's WeightSetStore (admin_service.proto).
// Every call is authenticated (bearer token, AdminTokenVerifier) before anything else and logged
// with its outcome. Loads and merges run in the calling RPC's thread; cancelling the call stops
// them. Errors map from the store's absl::Status codes unchanged.
#pragma once

#include "engine/rpc/admin_token.h"
#include "expert-svc/weight_set_store.h"
#include "expertmesh/v1/admin_service.grpc.pb.h"

namespace expertmesh::expert_service {

class ExpertAdminServiceImpl final : public v1::ExpertAdminService::Service {
 public:
  // Not owned; both must outlive the service.
  ExpertAdminServiceImpl(WeightSetStore* store, const rpc::AdminTokenVerifier* verifier)
      : store_(store), verifier_(verifier) {}

  grpc::Status LoadParent(grpc::ServerContext* context, const v1::LoadParentRequest* request,
                          v1::WeightSetResponse* response) override;
  grpc::Status PrepareBlend(grpc::ServerContext* context, const v1::PrepareBlendRequest* request,
                            v1::WeightSetResponse* response) override;
  grpc::Status CommitBlend(grpc::ServerContext* context, const v1::CommitBlendRequest* request,
                           v1::WeightSetResponse* response) override;
  grpc::Status AbortBlend(grpc::ServerContext* context, const v1::AbortBlendRequest* request,
                          v1::WeightSetResponse* response) override;
  grpc::Status ListWeightSets(grpc::ServerContext* context, const v1::ListWeightSetsRequest* request,
                              v1::ListWeightSetsResponse* response) override;
  grpc::Status DropWeightSet(grpc::ServerContext* context, const v1::DropWeightSetRequest* request,
                             v1::WeightSetResponse* response) override;
  grpc::Status SetDefault(grpc::ServerContext* context, const v1::SetDefaultRequest* request,
                          v1::ListWeightSetsResponse* response) override;

 private:
  grpc::Status Finish(const char* method, const grpc::ServerContext& context, const std::string& what,
                      const absl::Status& status) const;

  WeightSetStore* store_;
  const rpc::AdminTokenVerifier* verifier_;
};

// Store types as admin protos.
v1::WeightSetStatus WeightSetStatusToProto(const WeightSetStatus& status);
v1::ListWeightSetsResponse SnapshotToProto(const StoreSnapshot& snapshot, const std::string& shard_name);

}  // namespace expertmesh::expert_service
