// Router admin RPCs: authentication, delegation, logging.
#include "router-svc/router_admin_service.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/rpc/grpc_status.h"

namespace expertmesh::router_service {

grpc::Status RouterAdminServiceImpl::Finish(const char* method, const grpc::ServerContext& context,
                                            const std::string& what, const absl::Status& status) const {
  std::fprintf(stderr, "router-svc: admin %s %s from %s: %s\n", method, what.c_str(), context.peer().c_str(),
               status.ok() ? "OK" : status.ToString().c_str());
  return rpc::ToGrpcStatus(status);
}

v1::TrafficSplit RouterAdminServiceImpl::CurrentSplit() const {
  const CatalogSnapshot snapshot = catalog_->Snapshot();
  v1::TrafficSplit split;
  for (const auto& [name, weight] : snapshot.split) (*split.mutable_weights())[name] = weight;
  split.set_generation(snapshot.split_generation);
  return split;
}

grpc::Status RouterAdminServiceImpl::LoadParent(grpc::ServerContext* context, const v1::LoadParentRequest* request,
                                                v1::FleetWeightSet* response) {
  if (grpc::Status auth = verifier_->Check(*context, "LoadParent"); !auth.ok()) return auth;
  absl::StatusOr<v1::FleetWeightSet> loaded = fleet_->LoadParent(request->name(), request->checkpoint(), context);
  if (loaded.ok()) *response = *loaded;
  return Finish("LoadParent", *context,
                absl::StrCat("'", request->name(), "' from ", request->checkpoint(),
                             loaded.ok() ? absl::StrCat(" -> v", loaded->version()) : ""),
                loaded.status());
}

grpc::Status RouterAdminServiceImpl::CreateBlend(grpc::ServerContext* context, const v1::CreateBlendRequest* request,
                                                 v1::FleetWeightSet* response) {
  if (grpc::Status auth = verifier_->Check(*context, "CreateBlend"); !auth.ok()) return auth;
  absl::StatusOr<v1::FleetWeightSet> created = fleet_->CreateBlend(*request, context);
  if (created.ok()) *response = *created;
  std::string what = request->has_recipe() ? absl::StrCat("'", request->recipe().name(), "'")
                     : request->recipe_source_case() == v1::CreateBlendRequest::kRecipeFile
                         ? absl::StrCat("file ", request->recipe_file())
                         : std::string("(JSON recipe)");
  if (created.ok()) absl::StrAppend(&what, " -> '", created->name(), "' v", created->version());
  return Finish("CreateBlend", *context, what, created.status());
}

grpc::Status RouterAdminServiceImpl::ListWeightSets(grpc::ServerContext* context, const v1::ListWeightSetsRequest*,
                                                    v1::FleetWeightSets* response) {
  if (grpc::Status auth = verifier_->Check(*context, "ListWeightSets"); !auth.ok()) return auth;
  absl::StatusOr<v1::FleetWeightSets> listed = fleet_->List();
  if (!listed.ok()) return Finish("ListWeightSets", *context, "", listed.status());
  *response = *listed;
  return grpc::Status::OK;
}

grpc::Status RouterAdminServiceImpl::DropBlend(grpc::ServerContext* context, const v1::DropBlendRequest* request,
                                               v1::FleetWeightSets* response) {
  if (grpc::Status auth = verifier_->Check(*context, "DropBlend"); !auth.ok()) return auth;
  absl::Status dropped = fleet_->DropBlend(request->name());
  if (dropped.ok()) {
    if (absl::StatusOr<v1::FleetWeightSets> listed = fleet_->List(); listed.ok()) *response = *listed;
  }
  return Finish("DropBlend", *context, absl::StrCat("'", request->name(), "'"), dropped);
}

grpc::Status RouterAdminServiceImpl::SetDefault(grpc::ServerContext* context, const v1::SetDefaultRequest* request,
                                                v1::FleetWeightSets* response) {
  if (grpc::Status auth = verifier_->Check(*context, "SetDefault"); !auth.ok()) return auth;
  absl::Status status = fleet_->SetDefault(request->name());
  if (status.ok()) {
    if (absl::StatusOr<v1::FleetWeightSets> listed = fleet_->List(); listed.ok()) *response = *listed;
  }
  return Finish("SetDefault", *context, absl::StrCat("'", request->name(), "'"), status);
}

grpc::Status RouterAdminServiceImpl::SetTrafficSplit(grpc::ServerContext* context, const v1::TrafficSplit* request,
                                                     v1::TrafficSplit* response) {
  if (grpc::Status auth = verifier_->Check(*context, "SetTrafficSplit"); !auth.ok()) return auth;
  std::map<std::string, double> weights(request->weights().begin(), request->weights().end());
  std::vector<std::string> shown;
  for (const auto& [name, weight] : weights) shown.push_back(absl::StrCat(name, "=", weight));
  const absl::Status status = catalog_->SetSplit(weights);
  if (status.ok()) *response = CurrentSplit();
  return Finish("SetTrafficSplit", *context,
                absl::StrCat("{", absl::StrJoin(shown, ", "), "}",
                             status.ok() ? absl::StrCat(" -> generation ", response->generation()) : ""),
                status);
}

grpc::Status RouterAdminServiceImpl::GetTrafficSplit(grpc::ServerContext* context, const v1::GetTrafficSplitRequest*,
                                                     v1::TrafficSplit* response) {
  if (grpc::Status auth = verifier_->Check(*context, "GetTrafficSplit"); !auth.ok()) return auth;
  *response = CurrentSplit();
  return grpc::Status::OK;
}

}  // namespace expertmesh::router_service
