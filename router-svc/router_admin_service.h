// RouterAdminServiceImpl: the operator's single entry point for the fleet's weight sets
// (admin_service.proto RouterAdminService). Every call is authenticated with the admin bearer
// token before anything else, then delegated to FleetAdmin (shards, two-phase commits) or the
// BlendCatalog (traffic split), and logged with its outcome (never with a token).
#pragma once

#include "engine/rpc/admin_token.h"
#include "expertmesh/v1/admin_service.grpc.pb.h"
#include "router-svc/blend_catalog.h"
#include "router-svc/fleet_admin.h"

namespace expertmesh::router_service {

class RouterAdminServiceImpl final : public v1::RouterAdminService::Service {
 public:
  // Not owned; all must outlive the service.
  RouterAdminServiceImpl(FleetAdmin* fleet, BlendCatalog* catalog, const rpc::AdminTokenVerifier* verifier)
      : fleet_(fleet), catalog_(catalog), verifier_(verifier) {}

  grpc::Status LoadParent(grpc::ServerContext* context, const v1::LoadParentRequest* request,
                          v1::FleetWeightSet* response) override;
  grpc::Status CreateBlend(grpc::ServerContext* context, const v1::CreateBlendRequest* request,
                           v1::FleetWeightSet* response) override;
  grpc::Status ListWeightSets(grpc::ServerContext* context, const v1::ListWeightSetsRequest* request,
                              v1::FleetWeightSets* response) override;
  grpc::Status DropBlend(grpc::ServerContext* context, const v1::DropBlendRequest* request,
                         v1::FleetWeightSets* response) override;
  grpc::Status SetDefault(grpc::ServerContext* context, const v1::SetDefaultRequest* request,
                          v1::FleetWeightSets* response) override;
  grpc::Status SetTrafficSplit(grpc::ServerContext* context, const v1::TrafficSplit* request,
                               v1::TrafficSplit* response) override;
  grpc::Status GetTrafficSplit(grpc::ServerContext* context, const v1::GetTrafficSplitRequest* request,
                               v1::TrafficSplit* response) override;

 private:
  grpc::Status Finish(const char* method, const grpc::ServerContext& context, const std::string& what,
                      const absl::Status& status) const;
  v1::TrafficSplit CurrentSplit() const;

  FleetAdmin* fleet_;
  BlendCatalog* catalog_;
  const rpc::AdminTokenVerifier* verifier_;
};

}  // namespace expertmesh::router_service
