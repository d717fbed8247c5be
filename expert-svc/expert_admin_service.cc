// Admin RPCs of one shard: authentication, proto mapping, cancellation of long builds, logging.
#include "expert-svc/expert_admin_service.h"

#include <chrono>
#include <cstdio>
#include <stop_token>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/rpc/grpc_status.h"
#include "expert-svc/recipe_proto.h"

namespace expertmesh::expert_service {
namespace {

v1::WeightSetState StateToProto(WeightSetState state) {
  switch (state) {
    case WeightSetState::kLoading: return v1::WEIGHT_SET_STATE_LOADING;
    case WeightSetState::kMerging: return v1::WEIGHT_SET_STATE_MERGING;
    case WeightSetState::kPrepared: return v1::WEIGHT_SET_STATE_PREPARED;
    case WeightSetState::kReady: return v1::WEIGHT_SET_STATE_READY;
    case WeightSetState::kRetired: return v1::WEIGHT_SET_STATE_RETIRED;
    case WeightSetState::kDraining: return v1::WEIGHT_SET_STATE_DRAINING;
  }
  return v1::WEIGHT_SET_STATE_UNSPECIFIED;
}

// Requests stop on `source` when the call is cancelled (client cancel or deadline), until destroyed.
class CancellationWatch {
 public:
  CancellationWatch(grpc::ServerContext* context, std::stop_source source)
      : thread_([context, source](std::stop_token done) mutable {
          while (!done.stop_requested()) {
            if (context->IsCancelled()) {
              source.request_stop();
              return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }) {}

 private:
  std::jthread thread_;
};

}  // namespace

v1::WeightSetStatus WeightSetStatusToProto(const WeightSetStatus& status) {
  v1::WeightSetStatus proto;
  proto.set_name(status.name);
  proto.set_version(status.version);
  proto.set_kind(status.kind == WeightSetKind::kBlend ? v1::WEIGHT_SET_KIND_BLEND : v1::WEIGHT_SET_KIND_PARENT);
  proto.set_state(StateToProto(status.state));
  proto.set_is_default(status.is_default);
  proto.set_referenced_bytes(status.referenced_bytes);
  proto.set_unique_bytes(status.unique_bytes);
  proto.set_shared_bytes(status.shared_bytes);
  v1::WeightSetProgress* progress = proto.mutable_progress();
  progress->set_tensors_done(status.progress.tensors_done);
  progress->set_tensors_total(status.progress.tensors_total);
  progress->set_bytes_done(status.progress.bytes_done);
  progress->set_bytes_total(status.progress.bytes_total);
  progress->set_merged(status.progress.merged);
  progress->set_shared_with_base(status.progress.shared_with_base);
  progress->set_message(status.progress.ToString());
  proto.set_source(status.source);
  proto.set_base_parent(status.base_parent);
  proto.set_requests_in_flight(static_cast<uint64_t>(std::max<int64_t>(status.requests_in_flight, 0)));
  return proto;
}

v1::ListWeightSetsResponse SnapshotToProto(const StoreSnapshot& snapshot, const std::string& shard_name) {
  v1::ListWeightSetsResponse proto;
  proto.set_shard(shard_name);
  for (const WeightSetStatus& status : snapshot.weight_sets) *proto.add_weight_sets() = WeightSetStatusToProto(status);
  proto.set_default_weight_set(snapshot.default_name);
  proto.set_resident_bytes(snapshot.resident_bytes);
  proto.set_budget_bytes(snapshot.budget_bytes);
  for (const auto& [name, version] : snapshot.next_versions) (*proto.mutable_next_versions())[name] = version;
  return proto;
}

grpc::Status ExpertAdminServiceImpl::Finish(const char* method, const grpc::ServerContext& context,
                                            const std::string& what, const absl::Status& status) const {
  std::fprintf(stderr, "expert-svc %s: admin %s %s from %s: %s\n", store_->options().shard_name.c_str(), method,
               what.c_str(), context.peer().c_str(), status.ok() ? "OK" : status.ToString().c_str());
  return rpc::ToGrpcStatus(status);
}

grpc::Status ExpertAdminServiceImpl::LoadParent(grpc::ServerContext* context, const v1::LoadParentRequest* request,
                                                v1::WeightSetResponse* response) {
  if (grpc::Status auth = verifier_->Check(*context, "LoadParent"); !auth.ok()) return auth;
  std::stop_source stop;
  CancellationWatch watch(context, stop);
  absl::StatusOr<WeightSetStatus> loaded = store_->LoadParent(request->name(), request->checkpoint(), request->version(),
                                                              !request->prepare_only(), stop.get_token());
  if (loaded.ok()) *response->mutable_weight_set() = WeightSetStatusToProto(*loaded);
  return Finish("LoadParent",
                *context, absl::StrCat("'", request->name(), "' from ", request->checkpoint(),
                                       loaded.ok() ? absl::StrCat(" -> v", loaded->version) : ""),
                loaded.status());
}

grpc::Status ExpertAdminServiceImpl::PrepareBlend(grpc::ServerContext* context, const v1::PrepareBlendRequest* request,
                                                  v1::WeightSetResponse* response) {
  if (grpc::Status auth = verifier_->Check(*context, "PrepareBlend"); !auth.ok()) return auth;
  absl::StatusOr<Recipe> recipe = absl::InvalidArgumentError("no recipe: set recipe, recipe_json or recipe_file");
  switch (request->recipe_source_case()) {
    case v1::PrepareBlendRequest::kRecipe: recipe = RecipeFromProto(request->recipe()); break;
    case v1::PrepareBlendRequest::kRecipeJson: recipe = store_->ParseRecipeText(request->recipe_json()); break;
    case v1::PrepareBlendRequest::kRecipeFile: recipe = store_->ReadRecipeFile(request->recipe_file()); break;
    default: break;
  }
  if (!recipe.ok()) return Finish("PrepareBlend", *context, "(recipe)", recipe.status());
  const std::string name = recipe->name;
  std::stop_source stop;
  CancellationWatch watch(context, stop);
  absl::StatusOr<WeightSetStatus> prepared =
      store_->PrepareBlend(*std::move(recipe), request->version(), !request->prepare_only(), stop.get_token());
  if (prepared.ok()) *response->mutable_weight_set() = WeightSetStatusToProto(*prepared);
  return Finish("PrepareBlend", *context,
                absl::StrCat("'", name, "'", prepared.ok() ? absl::StrCat(" -> v", prepared->version, " ",
                                                                          WeightSetStateName(prepared->state))
                                                           : ""),
                prepared.status());
}

grpc::Status ExpertAdminServiceImpl::CommitBlend(grpc::ServerContext* context, const v1::CommitBlendRequest* request,
                                                 v1::WeightSetResponse* response) {
  if (grpc::Status auth = verifier_->Check(*context, "CommitBlend"); !auth.ok()) return auth;
  absl::StatusOr<WeightSetStatus> committed = store_->Commit(request->name(), request->version());
  if (committed.ok()) *response->mutable_weight_set() = WeightSetStatusToProto(*committed);
  return Finish("CommitBlend", *context, absl::StrCat("'", request->name(), "' v", request->version()),
                committed.status());
}

grpc::Status ExpertAdminServiceImpl::AbortBlend(grpc::ServerContext* context, const v1::AbortBlendRequest* request,
                                                v1::WeightSetResponse* response) {
  if (grpc::Status auth = verifier_->Check(*context, "AbortBlend"); !auth.ok()) return auth;
  // A cancelled build is waited for (within the call's deadline, at most a minute): when the
  // call returns OK nothing of the set is left.
  const auto remaining = context->deadline() - std::chrono::system_clock::now();
  const auto wait_until = std::chrono::steady_clock::now() +
                          std::min<std::chrono::steady_clock::duration>(
                              std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining),
                              std::chrono::minutes(1));
  absl::StatusOr<std::optional<WeightSetStatus>> aborted =
      store_->Abort(request->name(), request->version(), wait_until);
  if (aborted.ok() && aborted->has_value()) *response->mutable_weight_set() = WeightSetStatusToProto(**aborted);
  return Finish("AbortBlend", *context, absl::StrCat("'", request->name(), "' v", request->version()), aborted.status());
}

grpc::Status ExpertAdminServiceImpl::ListWeightSets(grpc::ServerContext* context, const v1::ListWeightSetsRequest*,
                                                    v1::ListWeightSetsResponse* response) {
  if (grpc::Status auth = verifier_->Check(*context, "ListWeightSets"); !auth.ok()) return auth;
  *response = SnapshotToProto(store_->List(), store_->options().shard_name);
  return grpc::Status::OK;
}

grpc::Status ExpertAdminServiceImpl::DropWeightSet(grpc::ServerContext* context, const v1::DropWeightSetRequest* request,
                                                   v1::WeightSetResponse* response) {
  if (grpc::Status auth = verifier_->Check(*context, "DropWeightSet"); !auth.ok()) return auth;
  std::optional<std::chrono::steady_clock::time_point> wait_until;
  if (request->wait()) {
    const auto remaining = context->deadline() - std::chrono::system_clock::now();
    wait_until = std::chrono::steady_clock::now() +
                 std::min<std::chrono::steady_clock::duration>(
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining), std::chrono::hours(1));
  }
  absl::StatusOr<std::vector<WeightSetStatus>> dropped = store_->Drop(request->name(), request->version(), wait_until);
  if (dropped.ok() && !dropped->empty()) *response->mutable_weight_set() = WeightSetStatusToProto(dropped->back());
  return Finish("DropWeightSet", *context,
                absl::StrCat("'", request->name(), "'", request->version() ? absl::StrCat(" v", request->version()) : ""),
                dropped.status());
}

grpc::Status ExpertAdminServiceImpl::SetDefault(grpc::ServerContext* context, const v1::SetDefaultRequest* request,
                                                v1::ListWeightSetsResponse* response) {
  if (grpc::Status auth = verifier_->Check(*context, "SetDefault"); !auth.ok()) return auth;
  const absl::Status status = store_->SetDefault(request->name());
  if (status.ok()) *response = SnapshotToProto(store_->List(), store_->options().shard_name);
  return Finish("SetDefault", *context, absl::StrCat("'", request->name(), "'"), status);
}

}  // namespace expertmesh::expert_service
