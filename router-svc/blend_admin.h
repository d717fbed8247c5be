// BlendAdmin: router-svc's live-blend machinery in one place — the BlendCatalog that chooses
// each request's weight set and version (CatalogBlendSelector), the FleetAdmin that drives every
// expert shard, the authenticated RouterAdminService, and a background sync that fills the
// catalog from the shards once they answer (until then requests pass their blend through and
// the attention tier resolves it) and then every sync_interval picks up blends, versions and the
// default that other router replicas committed. The shard list is --expert-shards, or else what
// the attention replicas' Describe reports.
#pragma once

#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "engine/rpc/admin_token.h"
#include "router-svc/attention_pool.h"
#include "router-svc/blend_catalog.h"
#include "router-svc/blend_selector.h"
#include "router-svc/fleet_admin.h"
#include "router-svc/router_admin_service.h"

namespace expertmesh::router_service {

struct BlendAdminOptions {
  std::string admin_token_file;     // "" = admin API disabled (every call UNAUTHENTICATED)
  std::filesystem::path recipes_dir;  // CreateBlend recipe files
  std::string expert_shards;        // shard admin addresses spec; "" = from the attention replicas
  std::chrono::milliseconds sync_interval{2000};
};

class BlendAdmin {
 public:
  // `pool` (not owned) must outlive the object. Fails for an unreadable token file or a bad
  // --expert-shards spec.
  static absl::StatusOr<std::unique_ptr<BlendAdmin>> Create(const BlendAdminOptions& options, AttentionPool* pool);
  ~BlendAdmin();

  BlendSelector& selector() { return *selector_; }
  grpc::Service* service() { return service_.get(); }
  BlendCatalog& catalog() { return *catalog_; }
  FleetAdmin& fleet() { return *fleet_; }

 private:
  BlendAdmin() = default;
  void SyncLoop(std::chrono::milliseconds interval);

  std::unique_ptr<rpc::AdminTokenVerifier> verifier_;
  FleetAdmin* fleet_for_callback_ = nullptr;
  std::unique_ptr<BlendCatalog> catalog_;
  std::unique_ptr<FleetAdmin> fleet_;
  std::unique_ptr<CatalogBlendSelector> selector_;
  std::unique_ptr<RouterAdminServiceImpl> service_;
  std::mutex mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::thread syncer_;
};

}  // namespace expertmesh::router_service
