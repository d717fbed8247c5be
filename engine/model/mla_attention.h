// MlaAttention: DeepSeek multi-head latent attention over LatentKvCache, with and without
// q_lora. Projections run over all tokens of a step at once; the attention core runs per
// sequence, either naively (latents expanded through kv_b_proj into per-head keys and values) or
// weight-absorbed (kv_b_proj's key part folded into the query, its value part applied after the
// weighted sum of latents, as in DeepSeek's inference code). Both give the same result.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "engine/format/model_config.h"
#include "engine/model/latent_kv_cache.h"
#include "engine/model/model_weights.h"
#include "engine/ops/compute_backend.h"
#include "engine/ops/rope.h"

namespace expertmesh {

enum class AttentionAlgorithm { kNaive, kAbsorbed };

// Epsilon of q_a_layernorm and kv_a_layernorm: transformers and DeepSeek build them with the
// RMSNorm default, not config.rms_norm_eps.
inline constexpr float kLatentNormEpsilon = 1e-6f;

// One sequence's rows within a step.
struct AttentionSequence {
  int64_t first_row = 0;   // row of its first new token in the step's [tokens, hidden] input
  int64_t num_tokens = 0;  // new tokens (prefill chunk or 1 for decode)
  LatentKvCache* cache = nullptr;  // positions continue from cache->length()
};

// qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 when YaRN sets mscale_all_dim, for V2
// and V3 alike: DeepSeek's code and transformers 5.x's DeepseekV2/V3Attention all do (the V2
// conformance fixtures from transformers 5.17 differ by ~0.4 in the logits without it).
double MlaSoftmaxScale(const ModelConfig& config);

// RoPE settings of a config: YaRN, table size, and channel pairing (interleaved for deepseek_v2
// and for rope_interleave=true, else rotate_half's split halves).
ops::RopeParameters MlaRopeParameters(const ModelConfig& config);

class MlaAttention {
 public:
  // `config`, `rope` and `backend` must outlive the object.
  MlaAttention(const ModelConfig& config, const ops::RotaryEmbedding& rope,
               const ops::ComputeBackend& backend, double softmax_scale);

  // x: [total_tokens, hidden] (after input_layernorm); output: [total_tokens, hidden] (o_proj
  // applied, overwritten). Appends each sequence's new latents to its cache for `layer` (the
  // caller commits). Sequences with one new token use `decode`, others `prefill`.
  absl::Status Forward(const AttentionWeights& weights, int64_t layer, std::span<const float> x,
                       int64_t total_tokens, std::span<const AttentionSequence> sequences,
                       AttentionAlgorithm prefill, AttentionAlgorithm decode,
                       std::span<float> output) const;

 private:
  // Attention core of one sequence: queries [tokens, heads * qk_head_dim] (rope applied) against
  // the layer's cache; writes [tokens, heads * v_head_dim].
  void AttendNaive(const AttentionWeights& weights, std::span<const float> latents,
                   std::span<const float> rope_keys, int64_t cache_length, int64_t start_position,
                   std::span<const float> queries, int64_t tokens, std::span<float> context) const;
  void AttendAbsorbed(const AttentionWeights& weights, std::span<const float> latents,
                      std::span<const float> rope_keys, int64_t cache_length,
                      int64_t start_position, std::span<const float> queries, int64_t tokens,
                      std::span<float> context) const;
  // scores [tokens, cache_length] *= scale, causal mask, softmax per row.
  void MaskedSoftmax(std::span<float> scores, int64_t tokens, int64_t cache_length,
                     int64_t start_position) const;

  const ModelConfig& config_;
  const ops::RotaryEmbedding& rope_;
  const ops::ComputeBackend& backend_;
  float softmax_scale_;
};

}  // namespace expertmesh
