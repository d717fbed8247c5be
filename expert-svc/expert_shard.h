// ExpertShard: what one expert-svc process serves — for each MoE layer the routed experts it
// hosts, and the RoutedExperts implementation that computes them. It validates every request
// against the model's shape and its hosted set before any computation (INVALID_ARGUMENT with the
// reason), and answers with one weighted-sum hidden vector per token, computed by the weight set
// the request names and pins (WeightSetStore: parents and live blends, hot-swappable; the reply
// says which set and version computed it). The set stays in use for the whole computation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/format/model_config.h"
#include "engine/model/routed_experts.h"
#include "expert-svc/hosted_experts.h"
#include "expert-svc/weight_set_store.h"
#include "expertmesh/v1/expert_service.pb.h"

namespace expertmesh::expert_service {

// Contiguous split of `num_experts` experts into `num_shards`: shard i hosts
// [i * E / N, (i + 1) * E / N). Replicas of a shard host the same range.
std::set<int32_t> ExpertRangeForShard(int64_t num_experts, int shard_index, int num_shards);

// Parses --experts: "0-7,12" (the same experts for every MoE layer of `config`) or per layer
// "1:0-7;2:0-3,9". Every expert must be < n_routed_experts and every named layer an MoE layer.
absl::StatusOr<HostedExperts> ParseExpertSpec(const std::string& spec, const ModelConfig& config);

// The same contiguous range for every MoE layer of `config`.
HostedExperts ShardRangeForModel(const ModelConfig& config, int shard_index, int num_shards);

struct ShardModelInfo {
  std::string model_type;
  int64_t hidden_size = 0;
  int64_t num_routed_experts = 0;
  std::string weight_dtype;  // as stored in the checkpoint ("bf16", "f32", "fp8-e4m3")
  std::string backend = "cpu";
  uint64_t resident_weight_bytes = 0;
  int64_t max_tokens_per_request = 65536;
  // Largest activation payload accepted per message (INVALID_ARGUMENT above it).
  uint64_t max_activation_bytes = 64ull << 20;
  // The weight set of the single-set constructor.
  std::string weight_set_name = "base";
  uint64_t weight_set_version = 1;
};

class ExpertShard {
 public:
  // Serves the weight sets of `store` (not owned, must outlive the shard).
  ExpertShard(std::string shard_name, ShardModelInfo info, HostedExperts hosted, WeightSetStore* store);
  // Serves one fixed weight set (info.weight_set_name / version) computed by `experts`.
  ExpertShard(std::string shard_name, ShardModelInfo info, HostedExperts hosted,
              std::unique_ptr<RoutedExperts> experts);

  // Checks a request without computing: weight set (NOT_FOUND if not resident,
  // FAILED_PRECONDITION for another pinned version), layer hosted, sizes, dtype, payload limit,
  // expert ids hosted, finite gate weights. Activations are checked for finiteness while decoding.
  absl::Status Validate(const v1::ExpertRequest& request) const;
  // Validates, computes and fills `reply` (request_id, dtype, outputs). Thread-safe.
  absl::Status Handle(const v1::ExpertRequest& request, v1::ExpertReply* reply) const;
  v1::ExpertShardDescription Describe() const;

  const HostedExperts& hosted() const { return hosted_; }
  const ShardModelInfo& info() const { return info_; }
  const std::string& shard_name() const { return shard_name_; }
  WeightSetStore& store() const { return *store_; }

 private:
  // Everything Validate checks except the weight set.
  absl::Status ValidateShape(const v1::ExpertRequest& request) const;

  std::string shard_name_;
  ShardModelInfo info_;
  HostedExperts hosted_;
  std::unique_ptr<WeightSetStore> owned_store_;  // single-set constructor
  WeightSetStore* store_;
};

}  // namespace expertmesh::expert_service
