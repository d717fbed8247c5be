// Request validation and computation for one expert shard.
#include "expert-svc/expert_shard.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
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

namespace {

// "0-7,12" -> {0..7, 12}, each < num_experts.
absl::StatusOr<std::set<int32_t>> ParseExpertList(absl::string_view text, int64_t num_experts) {
  std::set<int32_t> experts;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    int64_t first = 0, last = 0;
    const size_t dash = item.find('-');
    const bool parsed = dash == absl::string_view::npos
                            ? absl::SimpleAtoi(item, &first) && (last = first, true)
                            : absl::SimpleAtoi(item.substr(0, dash), &first) &&
                                  absl::SimpleAtoi(item.substr(dash + 1), &last);
    if (!parsed || first < 0 || last < first) {
      return absl::InvalidArgumentError(absl::StrCat("bad expert range '", item, "' (want N or N-M)"));
    }
    if (last >= num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", last, " out of range: the model has ", num_experts,
                                                     " routed experts"));
    }
    for (int64_t expert = first; expert <= last; ++expert) experts.insert(static_cast<int32_t>(expert));
  }
  if (experts.empty()) return absl::InvalidArgumentError(absl::StrCat("no experts in '", text, "'"));
  return experts;
}

}  // namespace

absl::StatusOr<HostedExperts> ParseExpertSpec(const std::string& spec, const ModelConfig& config) {
  HostedExperts hosted;
  if (spec.find(':') == std::string::npos) {
    auto experts = ParseExpertList(spec, config.n_routed_experts);
    if (!experts.ok()) return experts.status();
    for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
      if (config.IsMoeLayer(layer)) hosted[layer] = *experts;
    }
    return hosted;
  }
  for (absl::string_view part : absl::StrSplit(spec, ';', absl::SkipWhitespace())) {
    const size_t colon = part.find(':');
    int64_t layer = 0;
    if (colon == absl::string_view::npos ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(part.substr(0, colon)), &layer)) {
      return absl::InvalidArgumentError(absl::StrCat("bad layer entry '", part, "' (want LAYER:EXPERTS)"));
    }
    if (layer < 0 || layer >= config.num_hidden_layers || !config.IsMoeLayer(layer)) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " is not an MoE layer of this model"));
    }
    auto experts = ParseExpertList(part.substr(colon + 1), config.n_routed_experts);
    if (!experts.ok()) return experts.status();
    hosted[layer].insert(experts->begin(), experts->end());
  }
  return hosted;
}

HostedExperts ShardRangeForModel(const ModelConfig& config, int shard_index, int num_shards) {
  HostedExperts hosted;
  const std::set<int32_t> experts = ExpertRangeForShard(config.n_routed_experts, shard_index, num_shards);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (config.IsMoeLayer(layer) && !experts.empty()) hosted[layer] = experts;
  }
  return hosted;
}

ExpertShard::ExpertShard(std::string shard_name, ShardModelInfo info, HostedExperts hosted, WeightSetStore* store)
    : shard_name_(std::move(shard_name)), info_(std::move(info)), hosted_(std::move(hosted)), store_(store) {}

ExpertShard::ExpertShard(std::string shard_name, ShardModelInfo info, HostedExperts hosted,
                         std::unique_ptr<RoutedExperts> experts)
    : shard_name_(std::move(shard_name)), info_(std::move(info)), hosted_(std::move(hosted)) {
  WeightSetStoreOptions options;
  options.shard_name = shard_name_;
  options.model.hidden_size = info_.hidden_size;
  options.model.n_routed_experts = info_.num_routed_experts;
  options.hosted = hosted_;
  owned_store_ = std::make_unique<WeightSetStore>(std::move(options), MakeCpuExpertBackend());
  store_ = owned_store_.get();
  const absl::Status installed = store_->InstallPrebuilt(info_.weight_set_name, info_.weight_set_version,
                                                         std::move(experts), info_.resident_weight_bytes);
  if (!installed.ok()) std::fprintf(stderr, "expert shard %s: %s\n", shard_name_.c_str(), installed.ToString().c_str());
}

absl::Status ExpertShard::Validate(const v1::ExpertRequest& request) const {
  EXPERTMESH_RETURN_IF_ERROR(store_->Acquire(request.weight_set(), request.weight_set_version()).status());
  return ValidateShape(request);
}

absl::Status ExpertShard::ValidateShape(const v1::ExpertRequest& request) const {
  const auto layer = hosted_.find(request.layer());
  if (layer == hosted_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", request.layer(), " is not an MoE layer hosted by shard ", shard_name_));
  }
  if (request.hidden_size() != info_.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("hidden_size ", request.hidden_size(),
                                                   " does not match the model's ", info_.hidden_size));
  }
  if (request.dtype() != v1::TENSOR_DTYPE_F32 && request.dtype() != v1::TENSOR_DTYPE_BF16) {
    return absl::InvalidArgumentError(absl::StrCat("dtype must be TENSOR_DTYPE_F32 or TENSOR_DTYPE_BF16, got ",
                                                   v1::TensorDType_Name(request.dtype())));
  }
  if (request.activations().size() > info_.max_activation_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("activations of ", request.activations().size(),
                                                   " bytes exceed the shard's limit of ", info_.max_activation_bytes,
                                                   " bytes per message; split the batch"));
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
  // The set stays resident (and is not freed by a drop) until the guard goes away.
  EXPERTMESH_ASSIGN_OR_RETURN(WeightSet::UseGuard weight_set,
                              store_->Acquire(request.weight_set(), request.weight_set_version()));
  EXPERTMESH_RETURN_IF_ERROR(ValidateShape(request));
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
  EXPERTMESH_RETURN_IF_ERROR(weight_set->experts().Compute(batch, output));
  reply->set_dtype(request.dtype());
  reply->set_weight_set(weight_set->name());
  reply->set_weight_set_version(weight_set->version());
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
  const StoreSnapshot snapshot = store_->List();
  description.set_resident_weight_bytes(snapshot.resident_bytes);
  // The sets requests can name without pinning a version: READY ones.
  for (const WeightSetStatus& status : snapshot.weight_sets) {
    if (status.state != WeightSetState::kReady) continue;
    v1::WeightSetInfo* weight_set = description.add_weight_sets();
    weight_set->set_name(status.name);
    weight_set->set_version(status.version);
    weight_set->set_is_default(status.is_default);
  }
  for (const auto& [layer, experts] : hosted_) {
    v1::LayerExperts* entry = description.add_layers();
    entry->set_layer(layer);
    for (int32_t expert : experts) entry->add_expert_ids(expert);
  }
  return description;
}

}  // namespace expertmesh::expert_service
