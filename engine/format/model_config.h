// ModelConfig: every config.json field of a DeepSeek-V2/V3 checkpoint that changes the math,
// parsed and validated. Accepts the published DeepSeek layout (top-level rope_theta/rope_scaling)
// and transformers 5.x's (rope_parameters). Rejects unknown or contradictory values by field name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace expertmesh {

// YaRN context extension ("rope_scaling": {"type"|"rope_type": "yarn", ...}).
struct YarnScaling {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

enum class ScoringFunction { kSoftmax, kSigmoid };

// How routed experts are chosen from the router scores.
enum class TopKMethod {
  kGreedy,              // V2: plain top-k over all experts
  kGroupLimitedGreedy,  // V2: best topk_group groups by their max score, then top-k inside them
  kNoAuxTc,             // V3: scores + e_score_correction_bias; groups ranked by sum of their top-2
};

struct ModelConfig {
  std::string model_type;  // "deepseek_v2" or "deepseek_v3"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense MLP layers and (times n_shared) shared experts
  int64_t moe_intermediate_size = 0;  // one routed or shared expert
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t max_position_embeddings = 0;

  // Multi-head latent attention.
  std::optional<int64_t> q_lora_rank;  // nullopt: q_proj directly (V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  bool attention_bias = false;  // must be false: no checkpoint of the family uses biases

  // DeepSeekMoE.
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  TopKMethod topk_method = TopKMethod::kGreedy;
  ScoringFunction scoring_func = ScoringFunction::kSoftmax;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;

  // Positions and norms.
  double rope_theta = 10000.0;
  std::optional<YarnScaling> yarn;  // nullopt: plain RoPE
  bool rope_interleave = true;  // HF: q_pe/k_pe channels come interleaved and are de-interleaved
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;

  // Multi-token-prediction modules stored after the main layers (DeepSeek-V3: 1, as layer 61).
  // Not used for next-token logits; counted by the memory plan.
  int64_t num_nextn_predict_layers = 0;

  // Optional FP8 block quantization ("quantization_config": {"quant_method": "fp8", ...}).
  bool fp8_block_quantized = false;
  int64_t fp8_block_rows = 128;
  int64_t fp8_block_cols = 128;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // True for layers whose MLP is a DeepSeekMoE block (else a dense SwiGLU MLP).
  bool IsMoeLayer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }

  static absl::StatusOr<ModelConfig> FromJson(std::string_view json_text);
  static absl::StatusOr<ModelConfig> FromFile(const std::filesystem::path& config_json);
};

}  // namespace expertmesh
