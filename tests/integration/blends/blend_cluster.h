// Harness of the live-blend integration tests: a real fleet on loopback (expert-svc x2 with the
// admin API, attention-svc, router-svc learning the shards from attention's Describe, all sharing
// an admin token file), admin clients for the
// router and the shards, and checkpoint fixtures written by the test (a perturbed copy of a model
// whose routed experts differ, everything else equal).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "expertmesh/v1/admin_service.grpc.pb.h"
#include "tests/integration/router/router_client.h"
#include "tests/integration/service_cluster.h"

namespace expertmesh::testing {

// A fresh directory, removed on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Copies the checkpoint in `source` to `destination` with every routed-expert tensor perturbed by
// relative Gaussian noise (`scale` x its RMS, fixed `seed`), stored in the source dtype
// (float32 or bf16). Other tensors and config.json are copied unchanged.
absl::Status WritePerturbedCopy(const std::filesystem::path& source, const std::filesystem::path& destination,
                                double scale, uint64_t seed);

struct BlendClusterOptions {
  std::string model_directory;
  std::vector<std::string> shard0_flags;  // extra expert-svc flags of shard 0 only
};

class BlendCluster {
 public:
  static absl::StatusOr<std::unique_ptr<BlendCluster>> Start(const BlendClusterOptions& options);
  ~BlendCluster();

  ServiceProcess& shard(int index) { return *shards_[index]; }
  ServiceProcess& attention() { return *attention_; }
  ServiceProcess& router() { return *router_; }
  v1::AttentionService::Stub& attention_stub() { return *attention_stub_; }
  const std::string& token() const { return token_; }
  const std::filesystem::path& token_file() const { return token_file_; }

  // Admin contexts carry the token unless `token` is given ("" = none).
  std::unique_ptr<grpc::ClientContext> AdminContext(std::chrono::seconds timeout = std::chrono::seconds(60)) const;
  std::unique_ptr<grpc::ClientContext> AdminContext(const std::string& token,
                                                    std::chrono::seconds timeout = std::chrono::seconds(60)) const;
  v1::RouterAdminService::Stub& router_admin() { return *router_admin_; }
  v1::ExpertAdminService::Stub& shard_admin(int index) { return *shard_admin_[index]; }
  RouterClient& router_client() { return *router_client_; }

  // Router admin calls that must succeed (test assertion inside returns the default on failure).
  absl::StatusOr<v1::FleetWeightSet> LoadParent(const std::string& name, const std::string& checkpoint);
  absl::StatusOr<v1::FleetWeightSet> CreateBlend(const v1::BlendRecipe& recipe);
  absl::StatusOr<v1::FleetWeightSets> List();

 private:
  BlendCluster() = default;
  ScratchDir scratch_;
  std::filesystem::path token_file_;
  std::string token_;
  std::vector<std::unique_ptr<ServiceProcess>> shards_;
  std::unique_ptr<ServiceProcess> attention_;
  std::unique_ptr<ServiceProcess> router_;
  std::shared_ptr<grpc::Channel> attention_channel_;
  std::unique_ptr<v1::AttentionService::Stub> attention_stub_;
  std::shared_ptr<grpc::Channel> router_channel_;
  std::unique_ptr<v1::RouterAdminService::Stub> router_admin_;
  std::vector<std::shared_ptr<grpc::Channel>> shard_channels_;
  std::vector<std::unique_ptr<v1::ExpertAdminService::Stub>> shard_admin_;
  std::unique_ptr<RouterClient> router_client_;
};

// A recipe of two parents: W = lambda * first + (1 - lambda) * second, base `first`.
v1::BlendRecipe TwoParentRecipe(const std::string& name, const std::string& first, const std::string& second,
                                double lambda, double delta = 0.0);

// Status of a call as an absl::Status (for ASSERT_TRUE(...ok()) << messages).
absl::Status ToStatus(const grpc::Status& status);

}  // namespace expertmesh::testing
