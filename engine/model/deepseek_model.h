// DeepseekModel: the batched forward pass of a DeepSeek-V2/V3 model (Hugging Face
// DeepseekV2ForCausalLM / DeepseekV3ForCausalLM semantics). One Step takes several sequences, each
// with its own LatentKvCache and a chunk of new tokens (a prefill chunk or one decode token):
// attention runs per sequence, while norms, MLPs, the router and the experts run over all tokens
// of the step at once, which is what continuous batching in the services needs. Routed experts
// are reached only through RoutedExperts, so the model does not know where they live. With two
// micro-batches a step ping-pongs: one micro-batch's routed experts run (ComputeAsync) while the
// other's attention is computed, which hides remote expert round trips (MegaScale-Infer style).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "engine/format/model_config.h"
#include "engine/model/latent_kv_cache.h"
#include "engine/model/mla_attention.h"
#include "engine/model/model_weights.h"
#include "engine/model/routed_experts.h"
#include "engine/ops/compute_backend.h"
#include "engine/ops/rope.h"

namespace expertmesh {

struct ModelOptions {
  AttentionAlgorithm prefill_attention = AttentionAlgorithm::kNaive;
  AttentionAlgorithm decode_attention = AttentionAlgorithm::kAbsorbed;
  // 1: the whole step goes through each layer at once. 2: the step's sequences are split into
  // two micro-batches of about equal token counts whose layers interleave, so that the routed
  // experts of one run while the other computes attention. Same results either way.
  int64_t micro_batches = 1;
};

// One sequence of a step.
struct SequenceInput {
  LatentKvCache* cache = nullptr;         // its positions continue from cache->length()
  std::span<const int32_t> token_ids;     // new tokens, at least one
  bool all_logits = false;                // logits for every new token, else the last one only
};

// Per-layer routing decisions: expert ids [num_tokens, top_k] (best first) over the step's
// tokens in sequence order.
using RoutingObserver = std::function<void(int64_t layer, std::span<const int32_t> expert_ids,
                                           int64_t num_tokens, int64_t top_k)>;

// Per-step controls beyond the inputs.
struct StepOptions {
  const RoutingObserver* observer = nullptr;  // disables micro-batching (it sees whole steps)
  // Passed to RoutedExperts with every layer's batch (remote experts fail past it).
  std::chrono::steady_clock::time_point expert_deadline = std::chrono::steady_clock::time_point::max();
  // 0: ModelOptions::micro_batches; else 1 or 2 for this step.
  int64_t micro_batches = 0;
  // Non-null: this step's routed experts instead of the model's (e.g. the attention tier's
  // fan-out pinned to the weight set of the step's sequences). Not owned.
  RoutedExperts* routed_experts = nullptr;
};

class DeepseekModel {
 public:
  // Validates config and weight shapes. `routed_experts` (not owned, must outlive the model) may
  // be null only for models without MoE layers.
  static absl::StatusOr<std::unique_ptr<DeepseekModel>> Create(
      const ModelConfig& config, ModelWeights weights, RoutedExperts* routed_experts,
      ModelOptions options = {}, const ops::ComputeBackend& backend = ops::DefaultCpuBackend());

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const ModelOptions& options() const { return options_; }
  LatentKvCache NewCache() const;

  // Runs one step. Returns per sequence its logits: [new tokens, vocab] if all_logits, else
  // [1, vocab] for its last token. On error no cache changes.
  absl::StatusOr<std::vector<Tensor>> Step(std::span<const SequenceInput> sequences,
                                           const RoutingObserver* observer = nullptr) const;
  absl::StatusOr<std::vector<Tensor>> Step(std::span<const SequenceInput> sequences,
                                           const StepOptions& step_options) const;

 private:
  DeepseekModel(const ModelConfig& config, ModelWeights weights, RoutedExperts* routed_experts,
                ModelOptions options, const ops::ComputeBackend& backend, ops::RotaryEmbedding rope);
  absl::Status ValidateInputs(std::span<const SequenceInput> sequences) const;
  // One micro-batch's activations and its MoE layer in flight (defined in the .cc).
  struct MicroBatch;
  absl::StatusOr<std::vector<Tensor>> RunLayers(std::span<const SequenceInput> sequences,
                                                const StepOptions& step_options) const;
  // Attention of `layer` for `batch`, then its dense MLP, or its MoE gate with the routed
  // experts started (ComputeAsync) and the shared experts computed meanwhile.
  absl::Status BeginLayer(int64_t layer, MicroBatch& batch, const StepOptions& step_options) const;
  // Waits for the micro-batch's routed experts, if any are in flight, and adds the MoE output to
  // its residual stream.
  absl::Status FinishMoe(MicroBatch& batch) const;

  ModelConfig config_;
  ModelWeights weights_;
  RoutedExperts* routed_experts_;
  ModelOptions options_;
  const ops::ComputeBackend& backend_;
  ops::RotaryEmbedding rope_;
  std::unique_ptr<MlaAttention> attention_;
};

}  // namespace expertmesh
