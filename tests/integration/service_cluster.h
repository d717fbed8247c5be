// ServiceCluster: a real deployment on loopback for integration tests and benchmarks — N expert
// shards (each with R replicas, real expert-svc processes) and one attention-svc process in front
// of them — plus a Generate client that collects tokens, logits, usage and the final status.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "expertmesh/v1/attention_service.grpc.pb.h"
#include "tests/integration/service_process.h"

namespace expertmesh::testing {

struct ClusterOptions {
  std::string model_directory;
  int num_shards = 1;
  int replicas_per_shard = 1;
  std::vector<std::string> expert_flags;     // extra expert-svc flags
  std::vector<std::vector<std::string>> shard_flags;  // shard i's own extra flags (e.g. its GPU), if any
  std::vector<std::string> attention_flags;  // extra attention-svc flags
  bool start_attention = true;
};

class ServiceCluster {
 public:
  static absl::StatusOr<std::unique_ptr<ServiceCluster>> Start(const ClusterOptions& options);

  ServiceProcess& shard(int index, int replica = 0) { return *shards_[index][replica]; }
  ServiceProcess& attention() { return *attention_; }
  std::vector<std::string> shard_addresses() const;
  // Starts a stopped (killed) replica again on its old port.
  absl::Status RestartShard(int index, int replica = 0);
  // (Re)starts attention-svc with `extra_flags` added to the cluster's.
  absl::Status StartAttention(const std::vector<std::string>& extra_flags = {});

  v1::AttentionService::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

 private:
  ServiceCluster() = default;
  std::vector<std::string> ShardArguments(int index) const;

  ClusterOptions options_;
  std::vector<std::vector<std::unique_ptr<ServiceProcess>>> shards_;
  std::unique_ptr<ServiceProcess> attention_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AttentionService::Stub> stub_;
};

// What one Generate call produced.
struct GenerationOutput {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // per token, when include_logits
  bool has_usage = false;
  v1::Usage usage;
  grpc::Status status;
  std::chrono::duration<double> elapsed{0};
};

// Runs Generate to the end (or `timeout`, sent as the call's deadline).
GenerationOutput RunGenerate(v1::AttentionService::Stub& stub, const v1::SequenceRequest& request,
                             std::chrono::milliseconds timeout = std::chrono::milliseconds(30000));

v1::SequenceRequest MakeRequest(std::vector<int32_t> prompt, uint32_t max_tokens, bool include_logits = true);

// The requests the equivalence tests send: greedy prompts of 1, 5 and 12 tokens and one sampled
// request (temperature 0.9, top-p 0.8, seed 42), 10 new tokens each, ids below `vocab`.
std::vector<v1::SequenceRequest> EquivalenceRequests(int64_t vocab);

}  // namespace expertmesh::testing
