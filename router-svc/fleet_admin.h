// FleetAdmin: router-svc's driver of every expert shard's ExpertAdminService, keeping the
// BlendCatalog in step with the shards.
//   - New weight sets (LoadParent, CreateBlend) use a two-phase commit: the router picks one
//     version above every shard's, prepares it on all shards in parallel, and commits only when
//     every prepare succeeded; otherwise every shard aborts (cancelling builds still running) and
//     nothing changes. Only then does the catalog make the version current, so no request is ever
//     pinned to a version some shard lacks.
//   - Versions the catalog retires are dropped on every shard in the background once no request of
//     this router uses them (with retries while a shard is unreachable).
//   - Every shard call carries the admin token; fleet changes run one at a time.
// The shard list comes from a callback (the --expert-shards flag, or the attention replicas'
// Describe).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "expertmesh/v1/admin_service.grpc.pb.h"
#include "router-svc/blend_catalog.h"

namespace expertmesh::router_service {

struct FleetAdminOptions {
  std::string token;  // bearer token for the shards' admin calls ("" = none sent)
  std::filesystem::path recipes_dir;  // CreateBlend's recipe_file names resolve here
  std::chrono::milliseconds call_timeout{10000};   // list, commit, abort, drop, default
  std::chrono::milliseconds build_timeout{3600000};  // a shard's load or merge
  std::chrono::milliseconds retire_retry{1000};
};

using ShardSource = std::function<absl::StatusOr<std::vector<std::string>>()>;

class FleetAdmin {
 public:
  // `catalog` must outlive the FleetAdmin; its retire callback should call RetireVersion.
  FleetAdmin(ShardSource shards, BlendCatalog* catalog, FleetAdminOptions options);
  ~FleetAdmin();

  // Reads every shard's weight sets and resets the catalog: a name counts when every shard has
  // it READY (the lowest version if they differ), the default is the one most shards have.
  // UNAVAILABLE if a shard does not answer. `retire_old` as BlendCatalog::Reset (false for the
  // periodic resync that shows other router replicas' changes). Waits for a running fleet change.
  absl::Status Sync(bool retire_old = true);

  // Two-phase LoadParent / CreateBlend on every shard. `parent` (may be null) is the admin call:
  // its cancellation and deadline reach the shards' prepares.
  absl::StatusOr<v1::FleetWeightSet> LoadParent(const std::string& name, const std::string& checkpoint,
                                                const grpc::ServerContext* parent);
  absl::StatusOr<v1::FleetWeightSet> CreateBlend(const v1::CreateBlendRequest& request,
                                                 const grpc::ServerContext* parent);
  absl::StatusOr<v1::FleetWeightSets> List();
  absl::Status DropBlend(const std::string& name);
  absl::Status SetDefault(const std::string& name);

  // Drops (name, version) on every shard, in the background.
  void RetireVersion(const std::string& name, uint64_t version);
  // Waits until no retirement is queued or running (tests, walkthroughs).
  bool WaitRetirementsDone(std::chrono::milliseconds timeout);

 private:
  struct Shard {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::ExpertAdminService::Stub> stub;
  };
  absl::StatusOr<std::vector<Shard*>> Shards();
  absl::Status SyncLocked(bool retire_old);  // under change_mutex_
  std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout,
                                               const grpc::ServerContext* parent = nullptr) const;
  absl::StatusOr<std::vector<v1::ListWeightSetsResponse>> ListAll(const std::vector<Shard*>& shards);
  // Prepare with `prepare(shard, version)` everywhere, commit everywhere or abort everywhere.
  absl::StatusOr<v1::FleetWeightSet> TwoPhase(
      const std::string& name, v1::WeightSetKind kind, const grpc::ServerContext* parent,
      const std::function<grpc::Status(Shard&, uint64_t version, grpc::ClientContext&)>& prepare);
  v1::FleetWeightSet Describe(const CatalogNameSnapshot& entry, const CatalogSnapshot& catalog,
                              const std::vector<std::string>& addresses,
                              const std::vector<v1::ListWeightSetsResponse>& lists) const;
  void RetireLoop();

  ShardSource shard_source_;
  BlendCatalog* catalog_;
  const FleetAdminOptions options_;
  std::mutex change_mutex_;  // one fleet change at a time

  std::mutex shards_mutex_;
  std::map<std::string, std::unique_ptr<Shard>> shards_;  // by address; channels live forever

  std::mutex retire_mutex_;
  std::condition_variable retire_changed_;
  std::deque<std::pair<std::string, uint64_t>> retire_queue_;
  int retiring_now_ = 0;
  bool stopping_ = false;
  std::thread retirer_;
};

}  // namespace expertmesh::router_service
