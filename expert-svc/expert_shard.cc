// Request validation and computation for one expert shard.
#include "expert-svc/expert_shard.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/rpc/tensor_payload.h"

namespace expertmesh::expert_service {

std::set<int32_t> ExpertRangeForShard(int64_t num_experts, int shard_index, int num_shards) {
  std::set<int32_t> experts;
  const int64_t begin = shard_index * num_experts / num_shards;
  const int64_t end = (shard_index + 1) * num_experts / num_shards;
  for (int64_t expert = begin; expert < end; ++expert) experts.insert(static_cast<int32_t>(expert));
  return experts;
}

ExpertShard::ExpertShard(std::string shard_name, ShardModelInfo info, HostedExperts hosted,
                         std::unique_ptr<RoutedExperts> experts)
    : shard_name_(std::move(shard_name)),
      info_(std::move(info)),
      hosted_(std::move(hosted)),
      experts_(std::move(experts)) {}

absl::Status ExpertShard::Validate(const v1::ExpertRequest& request) const {
  const auto layer = hosted_.find(request.layer());
  if (layer == hosted_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", request.layer(), " is not an MoE layer hosted by shard ", shard_name_));
  }
  if (request.hidden_size() != info_.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("hidden_size ", request.hidden_size(),
                                                   " does not match the model's ", info_.hidden_size));
  }
  if (request.num_tokens() == 0) return absl::InvalidArgumentError("num_tokens must be >= 1");
  if (request.num_tokens() > info_.max_tokens_per_request) {
    return absl::InvalidArgumentError(absl::StrCat("num_tokens ", request.num_tokens(), " exceeds the limit of ",
                                                   info_.max_tokens_per_request, " per request"));
  }
  if (request.slots_per_token() == 0 || request.slots_per_token() > info_.num_routed_experts) {
    return absl::InvalidArgumentError(absl::StrCat("slots_per_token must be in [1, ", info_.num_routed_experts,
                                                   "], got ", request.slots_per_token()));
  }
  const int64_t slots = int64_t{request.num_tokens()} * request.slots_per_token();
  if (request.expert_ids_size() != slots || request.gate_weights_size() != slots) {
    return absl::InvalidArgumentError(absl::StrCat("expected ", slots, " expert_ids and gate_weights (num_tokens * ",
                                                   "slots_per_token), got ", request.expert_ids_size(), " and ",
                                                   request.gate_weights_size()));
  }
  for (int64_t slot = 0; slot < slots; ++slot) {
    const int32_t expert = request.expert_ids(slot);
    if (expert != -1 && !layer->second.contains(expert)) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", expert, " of layer ", request.layer(),
                                                     " is not hosted by shard ", shard_name_));
    }
    if (!std::isfinite(request.gate_weights(slot))) {
      return absl::InvalidArgumentError(absl::StrCat("gate weight ", slot, " is not finite"));
    }
  }
  return absl::OkStatus();
}

absl::Status ExpertShard::Handle(const v1::ExpertRequest& request, v1::ExpertReply* reply) const {
  reply->set_request_id(request.request_id());
  EXPERTMESH_RETURN_IF_ERROR(Validate(request));
  const int64_t num_tokens = request.num_tokens();
  const int64_t hidden = request.hidden_size();
  std::vector<float> activations;
  EXPERTMESH_RETURN_IF_ERROR(
      rpc::DecodeTensor(request.activations(), request.dtype(), num_tokens * hidden, "activations", &activations));
  std::vector<float> output(num_tokens * hidden, 0.0f);
  RoutedExpertBatch batch;
  batch.layer = request.layer();
  batch.num_tokens = num_tokens;
  batch.hidden_size = hidden;
  batch.top_k = request.slots_per_token();
  batch.activations = activations;
  batch.expert_ids = std::span<const int32_t>(request.expert_ids().data(), request.expert_ids_size());
  batch.gate_weights = std::span<const float>(request.gate_weights().data(), request.gate_weights_size());
  EXPERTMESH_RETURN_IF_ERROR(experts_->Compute(batch, output));
  reply->set_dtype(request.dtype());
  return rpc::EncodeTensor(output, request.dtype(), reply->mutable_outputs());
}

v1::ExpertShardDescription ExpertShard::Describe() const {
  v1::ExpertShardDescription description;
  description.set_shard_name(shard_name_);
  description.set_model_type(info_.model_type);
  description.set_hidden_size(info_.hidden_size);
  description.set_num_routed_experts(info_.num_routed_experts);
  description.set_weight_dtype(info_.weight_dtype);
  description.set_backend(info_.backend);
  description.set_resident_weight_bytes(info_.resident_weight_bytes);
  for (const auto& [layer, experts] : hosted_) {
    v1::LayerExperts* entry = description.add_layers();
    entry->set_layer(layer);
    for (int32_t expert : experts) entry->add_expert_ids(expert);
  }
  return description;
}

}  // namespace expertmesh::expert_service
