// DeepseekModel: embedding, decoder layers (MLA + dense MLP or MoE), final norm, LM head.
#include "engine/model/deepseek_model.h"

#include <cstdlib>
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
                                              MlaSoftmaxScale(config_));
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
  StepOptions step_options;
  step_options.observer = observer;
  return Step(sequences, step_options);
}

absl::StatusOr<std::vector<Tensor>> DeepseekModel::Step(std::span<const SequenceInput> sequences,
                                                        const StepOptions& step_options) const {
  EXPERTMESH_RETURN_IF_ERROR(ValidateInputs(sequences));
  absl::StatusOr<std::vector<Tensor>> logits = RunLayers(sequences, step_options);
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

struct DeepseekModel::MicroBatch {
  std::span<const SequenceInput> sequences;
  std::vector<AttentionSequence> attention_sequences;  // rows relative to this micro-batch
  int64_t tokens = 0;
  std::vector<float> residual, normed, block_output;
  // The MoE layer in flight: its routing (the batch's spans point here and into `normed`), the
  // routed output being filled, and the shared experts' output.
  std::future<absl::Status> routed;
  int64_t moe_layer = -1;
  RoutingResult routing;
  std::vector<float> routed_output, shared_output;
  bool has_shared_output = false;
};

namespace {

// Contiguous split of the sequences into `parts` (1 or 2) groups with token counts as equal as
// possible; every group gets at least one sequence.
std::vector<std::span<const SequenceInput>> SplitSequences(std::span<const SequenceInput> sequences,
                                                           int64_t parts) {
  if (parts < 2 || sequences.size() < 2) return {sequences};
  int64_t total = 0;
  for (const SequenceInput& s : sequences) total += static_cast<int64_t>(s.token_ids.size());
  size_t best_split = 1;
  int64_t best_gap = total, prefix = 0;
  for (size_t split = 1; split < sequences.size(); ++split) {
    prefix += static_cast<int64_t>(sequences[split - 1].token_ids.size());
    const int64_t gap = std::abs(total - 2 * prefix);
    if (gap < best_gap) {
      best_gap = gap;
      best_split = split;
    }
  }
  return {sequences.subspan(0, best_split), sequences.subspan(best_split)};
}

}  // namespace

absl::StatusOr<std::vector<Tensor>> DeepseekModel::RunLayers(std::span<const SequenceInput> sequences,
                                                             const StepOptions& step_options) const {
  const int64_t hidden = config_.hidden_size;
  const int64_t parts = step_options.observer != nullptr ? 1
                        : step_options.micro_batches > 0  ? step_options.micro_batches
                                                          : options_.micro_batches;
  std::vector<MicroBatch> batches;
  for (std::span<const SequenceInput> part : SplitSequences(sequences, parts)) {
    MicroBatch& batch = batches.emplace_back();
    batch.sequences = part;
    for (const SequenceInput& s : part) {
      const auto count = static_cast<int64_t>(s.token_ids.size());
      batch.attention_sequences.push_back({batch.tokens, count, s.cache});
      batch.tokens += count;
    }
    // Residual stream [tokens, hidden], starting from the embeddings.
    batch.residual.resize(batch.tokens * hidden);
    int64_t row = 0;
    for (const SequenceInput& s : part) {
      for (int32_t id : s.token_ids) {
        std::span<const float> embedding = weights_.embed_tokens.row(id);
        std::copy(embedding.begin(), embedding.end(), batch.residual.data() + row * hidden);
        ++row;
      }
    }
    batch.normed.resize(batch.tokens * hidden);
    batch.block_output.resize(batch.tokens * hidden);
  }

  // Layer by layer, micro-batch after micro-batch: finishing one micro-batch's previous MoE layer
  // and starting its next one happens while the other micro-batch's experts are in flight.
  absl::Status status;
  for (int64_t layer = 0; layer < config_.num_hidden_layers && status.ok(); ++layer) {
    for (MicroBatch& batch : batches) {
      status = FinishMoe(batch);
      if (status.ok()) status = BeginLayer(layer, batch, step_options);
      if (!status.ok()) break;
    }
  }
  for (MicroBatch& batch : batches) {
    // Always wait: the experts may still be writing into this micro-batch's buffers.
    absl::Status finished = FinishMoe(batch);
    if (status.ok()) status = finished;
  }
  EXPERTMESH_RETURN_IF_ERROR(status);

  // Final norm and LM head on the requested rows only.
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const Tensor& head = weights_.output_projection();
  std::vector<Tensor> logits;
  for (const MicroBatch& batch : batches) {
    int64_t first_row = 0;
    for (const SequenceInput& s : batch.sequences) {
      const auto count = static_cast<int64_t>(s.token_ids.size());
      const int64_t rows = s.all_logits ? count : 1;
      const int64_t start_row = first_row + count - rows;
      std::vector<float> final_hidden(rows * hidden);
      backend_.RmsNorm(std::span<const float>(batch.residual.data() + start_row * hidden, rows * hidden), rows,
                       hidden, weights_.norm.values(), eps, final_hidden);
      Tensor sequence_logits({rows, config_.vocab_size});
      backend_.Linear(final_hidden, rows, hidden, head.values(), config_.vocab_size, sequence_logits.values());
      logits.push_back(std::move(sequence_logits));
      first_row += count;
    }
  }
  return logits;
}

absl::Status DeepseekModel::BeginLayer(int64_t layer, MicroBatch& batch, const StepOptions& step_options) const {
  const LayerWeights& w = weights_.layers[layer];
  const int64_t hidden = config_.hidden_size;
  const int64_t tokens = batch.tokens;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  backend_.RmsNorm(batch.residual, tokens, hidden, w.input_layernorm.values(), eps, batch.normed);
  EXPERTMESH_RETURN_IF_ERROR(attention_->Forward(w.attention, layer, batch.normed, tokens,
                                                 batch.attention_sequences, options_.prefill_attention,
                                                 options_.decode_attention, batch.block_output));
  for (size_t i = 0; i < batch.residual.size(); ++i) batch.residual[i] += batch.block_output[i];
  backend_.RmsNorm(batch.residual, tokens, hidden, w.post_attention_layernorm.values(), eps, batch.normed);
  if (!config_.IsMoeLayer(layer)) {
    ApplySwiGluMlp(backend_, *w.dense_mlp, batch.normed, tokens, batch.block_output);
    for (size_t i = 0; i < batch.residual.size(); ++i) batch.residual[i] += batch.block_output[i];
    return absl::OkStatus();
  }

  const int64_t experts = config_.n_routed_experts;
  std::vector<float> router_logits(tokens * experts);
  backend_.Linear(batch.normed, tokens, hidden, w.gate->weight.values(), experts, router_logits);
  EXPERTMESH_ASSIGN_OR_RETURN(batch.routing,
                              RouteTokens(config_, router_logits, tokens, w.gate->e_score_correction_bias.values()));
  if (step_options.observer != nullptr && *step_options.observer) {
    (*step_options.observer)(layer, batch.routing.expert_ids, tokens, batch.routing.top_k);
  }
  batch.routed_output.assign(tokens * hidden, 0.0f);
  RoutedExpertBatch routed;
  routed.layer = layer;
  routed.num_tokens = tokens;
  routed.hidden_size = hidden;
  routed.top_k = batch.routing.top_k;
  routed.activations = batch.normed;
  routed.expert_ids = batch.routing.expert_ids;
  routed.gate_weights = batch.routing.weights;
  routed.deadline = step_options.expert_deadline;
  batch.moe_layer = layer;
  RoutedExperts* routed_experts =
      step_options.routed_experts != nullptr ? step_options.routed_experts : routed_experts_;
  batch.routed = routed_experts->ComputeAsync(routed, batch.routed_output);
  // The shared experts run while the routed ones are computed elsewhere.
  batch.has_shared_output = w.shared_experts.has_value();
  if (batch.has_shared_output) {
    batch.shared_output.resize(tokens * hidden);
    ApplySwiGluMlp(backend_, *w.shared_experts, batch.normed, tokens, batch.shared_output);
  }
  return absl::OkStatus();
}

absl::Status DeepseekModel::FinishMoe(MicroBatch& batch) const {
  if (!batch.routed.valid()) return absl::OkStatus();
  const absl::Status status = batch.routed.get();
  if (!status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("routed experts of layer ", batch.moe_layer, ": ", status.message()));
  }
  // (routed + shared) rounds exactly as accumulating the shared experts onto the routed sum.
  if (batch.has_shared_output) {
    for (size_t i = 0; i < batch.residual.size(); ++i) {
      batch.residual[i] += batch.routed_output[i] + batch.shared_output[i];
    }
  } else {
    for (size_t i = 0; i < batch.residual.size(); ++i) batch.residual[i] += batch.routed_output[i];
  }
  return absl::OkStatus();
}

}  // namespace expertmesh
