// DeepseekModel: embedding, decoder layers (MLA + dense MLP or MoE), final norm, LM head.
#include "engine/model/deepseek_model.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/model/moe_gate.h"
#include "engine/model/swiglu_mlp.h"

namespace expertmesh {

absl::StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::Create(const ModelConfig& config,
                                                                     ModelWeights weights,
                                                                     RoutedExperts* routed_experts,
                                                                     ModelOptions options,
                                                                     const ops::ComputeBackend& backend) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateModelWeights(config, weights));
  bool has_moe = false;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) has_moe |= config.IsMoeLayer(layer);
  if (has_moe && routed_experts == nullptr) {
    return absl::InvalidArgumentError("model has MoE layers but no RoutedExperts was given");
  }
  EXPERTMESH_ASSIGN_OR_RETURN(ops::RotaryEmbedding rope, ops::RotaryEmbedding::Create(MlaRopeParameters(config)));
  return std::unique_ptr<DeepseekModel>(
      new DeepseekModel(config, std::move(weights), routed_experts, options, backend, std::move(rope)));
}

DeepseekModel::DeepseekModel(const ModelConfig& config, ModelWeights weights, RoutedExperts* routed_experts,
                             ModelOptions options, const ops::ComputeBackend& backend, ops::RotaryEmbedding rope)
    : config_(config),
      weights_(std::move(weights)),
      routed_experts_(routed_experts),
      options_(options),
      backend_(backend),
      rope_(std::move(rope)) {
  attention_ = std::make_unique<MlaAttention>(config_, rope_, backend_,
                                              MlaSoftmaxScale(config_, options_.v2_applies_yarn_mscale));
}

LatentKvCache DeepseekModel::NewCache() const {
  return LatentKvCache(config_.num_hidden_layers, config_.kv_lora_rank, config_.qk_rope_head_dim);
}

absl::Status DeepseekModel::ValidateInputs(std::span<const SequenceInput> sequences) const {
  if (sequences.empty()) return absl::InvalidArgumentError("step has no sequences");
  std::set<const LatentKvCache*> seen;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const SequenceInput& s = sequences[i];
    if (s.cache == nullptr) return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " has no KV cache"));
    if (!seen.insert(s.cache).second) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " shares its KV cache with another"));
    }
    if (s.cache->num_layers() != config_.num_hidden_layers || s.cache->kv_lora_rank() != config_.kv_lora_rank ||
        s.cache->rope_dim() != config_.qk_rope_head_dim) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, ": KV cache shape does not match the model"));
    }
    if (s.token_ids.empty()) return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " has no new tokens"));
    for (int32_t id : s.token_ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", i, ": token id ", id, " outside [0, ",
                                                       config_.vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Tensor>> DeepseekModel::Step(std::span<const SequenceInput> sequences,
                                                        const RoutingObserver* observer) const {
  EXPERTMESH_RETURN_IF_ERROR(ValidateInputs(sequences));
  absl::StatusOr<std::vector<Tensor>> logits = RunLayers(sequences, observer);
  if (!logits.ok()) {
    for (const SequenceInput& s : sequences) s.cache->Rollback();
    return logits.status();
  }
  for (const SequenceInput& s : sequences) {
    absl::Status committed = s.cache->Commit(static_cast<int64_t>(s.token_ids.size()));
    if (!committed.ok()) {
      for (const SequenceInput& other : sequences) other.cache->Rollback();
      return committed;
    }
  }
  return logits;
}

absl::StatusOr<std::vector<Tensor>> DeepseekModel::RunLayers(std::span<const SequenceInput> sequences,
                                                             const RoutingObserver* observer) const {
  const int64_t hidden = config_.hidden_size;
  std::vector<AttentionSequence> attention_sequences;
  int64_t total_tokens = 0;
  for (const SequenceInput& s : sequences) {
    const auto count = static_cast<int64_t>(s.token_ids.size());
    attention_sequences.push_back({total_tokens, count, s.cache});
    total_tokens += count;
  }
  // Residual stream [total_tokens, hidden], starting from the embeddings.
  std::vector<float> residual(total_tokens * hidden);
  {
    int64_t row = 0;
    for (const SequenceInput& s : sequences) {
      for (int32_t id : s.token_ids) {
        std::span<const float> embedding = weights_.embed_tokens.row(id);
        std::copy(embedding.begin(), embedding.end(), residual.data() + row * hidden);
        ++row;
      }
    }
  }
  std::vector<float> normed(total_tokens * hidden), block_output(total_tokens * hidden);
  const float eps = static_cast<float>(config_.rms_norm_eps);
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
    const LayerWeights& w = weights_.layers[layer];
    backend_.RmsNorm(residual, total_tokens, hidden, w.input_layernorm.values(), eps, normed);
    EXPERTMESH_RETURN_IF_ERROR(attention_->Forward(w.attention, layer, normed, total_tokens, attention_sequences,
                                                   options_.prefill_attention, options_.decode_attention,
                                                   block_output));
    for (size_t i = 0; i < residual.size(); ++i) residual[i] += block_output[i];

    backend_.RmsNorm(residual, total_tokens, hidden, w.post_attention_layernorm.values(), eps, normed);
    if (config_.IsMoeLayer(layer)) {
      EXPERTMESH_RETURN_IF_ERROR(RunMoe(layer, normed, total_tokens, block_output, observer));
    } else {
      ApplySwiGluMlp(backend_, *w.dense_mlp, normed, total_tokens, block_output);
    }
    for (size_t i = 0; i < residual.size(); ++i) residual[i] += block_output[i];
  }

  // Final norm and LM head on the requested rows only.
  const Tensor& head = weights_.output_projection();
  std::vector<Tensor> logits;
  int64_t first_row = 0;
  for (const SequenceInput& s : sequences) {
    const auto count = static_cast<int64_t>(s.token_ids.size());
    const int64_t rows = s.all_logits ? count : 1;
    const int64_t start_row = first_row + count - rows;
    std::vector<float> final_hidden(rows * hidden);
    backend_.RmsNorm(std::span<const float>(residual.data() + start_row * hidden, rows * hidden), rows, hidden,
                     weights_.norm.values(), eps, final_hidden);
    Tensor sequence_logits({rows, config_.vocab_size});
    backend_.Linear(final_hidden, rows, hidden, head.values(), config_.vocab_size, sequence_logits.values());
    logits.push_back(std::move(sequence_logits));
    first_row += count;
  }
  return logits;
}

absl::Status DeepseekModel::RunMoe(int64_t layer, std::span<const float> x, int64_t tokens,
                                   std::span<float> output, const RoutingObserver* observer) const {
  const LayerWeights& w = weights_.layers[layer];
  const int64_t hidden = config_.hidden_size;
  const int64_t experts = config_.n_routed_experts;
  std::vector<float> router_logits(tokens * experts);
  backend_.Linear(x, tokens, hidden, w.gate->weight.values(), experts, router_logits);
  EXPERTMESH_ASSIGN_OR_RETURN(RoutingResult routing,
                              RouteTokens(config_, router_logits, tokens, w.gate->e_score_correction_bias.values()));
  if (observer != nullptr && *observer) (*observer)(layer, routing.expert_ids, tokens, routing.top_k);
  std::fill(output.begin(), output.end(), 0.0f);
  RoutedExpertBatch batch;
  batch.layer = layer;
  batch.num_tokens = tokens;
  batch.hidden_size = hidden;
  batch.top_k = routing.top_k;
  batch.activations = x;
  batch.expert_ids = routing.expert_ids;
  batch.gate_weights = routing.weights;
  absl::Status status = routed_experts_->Compute(batch, output);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("routed experts of layer ", layer, ": ", status.message()));
  }
  if (w.shared_experts) ApplySwiGluMlp(backend_, *w.shared_experts, x, tokens, output, /*accumulate=*/true);
  return absl::OkStatus();
}

}  // namespace expertmesh
