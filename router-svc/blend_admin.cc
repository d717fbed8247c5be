// BlendAdmin: wiring of catalog, fleet driver, admin service and the start-up sync.
#include "router-svc/blend_admin.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "router-svc/replica_addresses.h"

namespace expertmesh::router_service {
namespace {

// The expert shards an attention replica reports (its Describe's expert_shards).
absl::StatusOr<std::vector<std::string>> ShardsFromAttention(AttentionPool* pool) {
  absl::StatusOr<AttentionPool::Lease> lease = pool->Acquire();
  if (!lease.ok()) return lease.status();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::AttentionDescription description;
  const grpc::Status status = lease->stub()->Describe(&context, v1::DescribeAttentionRequest(), &description);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("attention replica ", lease->address(), ": ", status.error_message()));
  }
  return std::vector<std::string>(description.expert_shards().begin(), description.expert_shards().end());
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlendAdmin>> BlendAdmin::Create(const BlendAdminOptions& options, AttentionPool* pool) {
  auto admin = std::unique_ptr<BlendAdmin>(new BlendAdmin());
  FleetAdminOptions fleet_options;
  fleet_options.recipes_dir = options.recipes_dir;
  if (options.admin_token_file.empty()) {
    admin->verifier_ = rpc::AdminTokenVerifier::Disabled("router-svc");
  } else {
    absl::StatusOr<std::unique_ptr<rpc::AdminTokenVerifier>> verifier =
        rpc::AdminTokenVerifier::FromFile(options.admin_token_file, "router-svc");
    if (!verifier.ok()) return verifier.status();
    admin->verifier_ = *std::move(verifier);
    // The router's calls to the shards carry the same token.
    absl::StatusOr<std::string> token = rpc::ReadAdminTokenFile(options.admin_token_file);
    if (!token.ok()) return token.status();
    fleet_options.token = *token;
  }
  ShardSource shards;
  if (!options.expert_shards.empty()) {
    absl::StatusOr<std::vector<std::string>> fixed = ResolveReplicaAddresses(options.expert_shards);
    if (!fixed.ok()) return fixed.status();
    shards = [fixed = *fixed]() -> absl::StatusOr<std::vector<std::string>> { return fixed; };
  } else {
    shards = [pool] { return ShardsFromAttention(pool); };
  }
  BlendAdmin* raw = admin.get();
  admin->catalog_ = std::make_unique<BlendCatalog>([raw](const std::string& name, uint64_t version) {
    if (raw->fleet_for_callback_ != nullptr) raw->fleet_for_callback_->RetireVersion(name, version);
  });
  admin->fleet_ = std::make_unique<FleetAdmin>(std::move(shards), admin->catalog_.get(), fleet_options);
  admin->fleet_for_callback_ = admin->fleet_.get();
  admin->selector_ = std::make_unique<CatalogBlendSelector>(admin->catalog_.get());
  admin->service_ =
      std::make_unique<RouterAdminServiceImpl>(admin->fleet_.get(), admin->catalog_.get(), admin->verifier_.get());
  admin->syncer_ = std::thread([raw, interval = options.sync_interval] { raw->SyncLoop(interval); });
  return admin;
}

BlendAdmin::~BlendAdmin() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  fleet_for_callback_ = nullptr;
}

void BlendAdmin::SyncLoop(std::chrono::milliseconds interval) {
  std::unique_lock<std::mutex> lock(mutex_);
  bool reported = false;
  while (!stopping_) {
    // The first sync fills the catalog; later ones pick up what other router replicas (or direct
    // shard admin calls) committed, without dropping anything.
    const bool first = !catalog_->initialized();
    lock.unlock();
    const absl::Status synced = fleet_->Sync(/*retire_old=*/first);
    if (synced.ok() && !reported) {
      reported = true;
      const CatalogSnapshot snapshot = catalog_->Snapshot();
      std::vector<std::string> names;
      for (const auto& entry : snapshot.names) names.push_back(absl::StrCat(entry.current.name, " v", entry.current.version));
      std::fprintf(stderr, "router-svc: the expert shards serve %s (default '%s')\n", absl::StrJoin(names, ", ").c_str(),
                   snapshot.default_name.c_str());
    }
    lock.lock();
    stop_.wait_for(lock, interval, [&] { return stopping_; });
  }
}

}  // namespace expertmesh::router_service
