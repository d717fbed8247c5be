// ModelWeights: every float32 tensor of a DeepSeek-V2/V3 model except the routed experts (those
// live behind RoutedExperts), named after the Hugging Face checkpoint tensors, plus the shape
// rules that tie each tensor to ModelConfig. ValidateModelWeights checks a whole set.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/tensor.h"
#include "engine/format/model_config.h"

namespace expertmesh {

// A SwiGLU MLP: down(silu(gate(x)) * up(x)). Dense layers, shared experts and routed experts.
struct MlpWeights {
  Tensor gate_proj;  // [intermediate, hidden]
  Tensor up_proj;    // [intermediate, hidden]
  Tensor down_proj;  // [hidden, intermediate]
};

// Multi-head latent attention of one layer.
struct AttentionWeights {
  Tensor q_proj;             // [heads * qk_head_dim, hidden]; only without q_lora
  Tensor q_a_proj;           // [q_lora_rank, hidden]; only with q_lora
  Tensor q_a_layernorm;      // [q_lora_rank]
  Tensor q_b_proj;           // [heads * qk_head_dim, q_lora_rank]
  Tensor kv_a_proj_with_mqa; // [kv_lora_rank + qk_rope_head_dim, hidden]
  Tensor kv_a_layernorm;     // [kv_lora_rank]
  Tensor kv_b_proj;          // [heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]
  Tensor o_proj;             // [hidden, heads * v_head_dim]
};

// The router of an MoE layer.
struct MoeGateWeights {
  Tensor weight;                   // [n_routed_experts, hidden]
  Tensor e_score_correction_bias;  // [n_routed_experts]; only for topk_method noaux_tc
};

struct LayerWeights {
  Tensor input_layernorm;           // [hidden]
  Tensor post_attention_layernorm;  // [hidden]
  AttentionWeights attention;
  std::optional<MlpWeights> dense_mlp;       // dense layers
  std::optional<MoeGateWeights> gate;        // MoE layers
  std::optional<MlpWeights> shared_experts;  // MoE layers with n_shared_experts > 0
};

struct ModelWeights {
  Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor norm;     // [hidden]
  Tensor lm_head;  // [vocab, hidden]; empty when tie_word_embeddings (embed_tokens is used)

  const Tensor& output_projection() const { return lm_head.empty() ? embed_tokens : lm_head; }
  uint64_t ByteSize() const;
};

// One tensor a model needs: its checkpoint name and the shape the config implies.
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Checkpoint tensor names and shapes of everything in ModelWeights (no routed experts), in load
// order. Fails on configs the model cannot run (e.g. n_routed_experts not divisible by n_group).
absl::StatusOr<std::vector<WeightSpec>> NonExpertWeightSpecs(const ModelConfig& config);
// The three tensors of routed expert `expert` of `layer`.
std::vector<WeightSpec> RoutedExpertWeightSpecs(const ModelConfig& config, int64_t layer,
                                                int64_t expert);

// Mutable slot of `weights` for the checkpoint tensor `name` (sizes `weights.layers` first),
// nullptr for names that are not part of ModelWeights.
Tensor* FindWeightSlot(ModelWeights& weights, const ModelConfig& config, const std::string& name);

// Every tensor present with the shape the config implies; INVALID_ARGUMENT names the first
// offender, its shape and the expected one.
absl::Status ValidateModelWeights(const ModelConfig& config, const ModelWeights& weights);
absl::Status ValidateMlpWeights(const MlpWeights& mlp, int64_t hidden, int64_t intermediate,
                                const std::string& what);

// Checks the config fields the forward pass relies on (positive sizes, group divisibility...).
absl::Status ValidateConfigForModel(const ModelConfig& config);

}  // namespace expertmesh
