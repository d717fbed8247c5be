// MlaAttention: q/kv projections, RoPE, cache append, naive and absorbed attention cores.
#include "engine/model/mla_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"

namespace expertmesh {

double MlaSoftmaxScale(const ModelConfig& config) {
  double scale = 1.0 / std::sqrt(static_cast<double>(config.qk_head_dim()));
  if (config.yarn && config.yarn->mscale_all_dim != 0.0) {
    const double mscale = ops::YarnMscale(config.yarn->factor, config.yarn->mscale_all_dim);
    scale *= mscale * mscale;
  }
  return scale;
}

ops::RopeParameters MlaRopeParameters(const ModelConfig& config) {
  ops::RopeParameters parameters;
  parameters.rotary_dim = config.qk_rope_head_dim;
  parameters.theta = config.rope_theta;
  if (config.yarn) {
    const YarnScaling& y = *config.yarn;
    parameters.yarn = ops::YarnParameters{y.factor, y.original_max_position_embeddings, y.beta_fast,
                                          y.beta_slow, y.mscale, y.mscale_all_dim};
  }
  parameters.table_positions = std::clamp<int64_t>(config.max_position_embeddings, 1, 1 << 16);
  // transformers' V2 always rotates complex (interleaved) pairs; V3 de-interleaves q_pe/k_pe
  // before rotate_half when rope_interleave is set. De-interleaving permutes q and k alike, so
  // the scores equal rotating the interleaved pairs in place.
  const bool interleaved = config.model_type == "deepseek_v2" || config.rope_interleave;
  parameters.pairing = interleaved ? ops::RotaryPairing::kInterleaved : ops::RotaryPairing::kHalfSplit;
  return parameters;
}

MlaAttention::MlaAttention(const ModelConfig& config, const ops::RotaryEmbedding& rope,
                           const ops::ComputeBackend& backend, double softmax_scale)
    : config_(config), rope_(rope), backend_(backend), softmax_scale_(static_cast<float>(softmax_scale)) {}

absl::Status MlaAttention::Forward(const AttentionWeights& w, int64_t layer, std::span<const float> x,
                                   int64_t total_tokens, std::span<const AttentionSequence> sequences,
                                   AttentionAlgorithm prefill, AttentionAlgorithm decode,
                                   std::span<float> output) const {
  const int64_t hidden = config_.hidden_size;
  const int64_t heads = config_.num_attention_heads;
  const int64_t qk_dim = config_.qk_head_dim();
  const int64_t nope = config_.qk_nope_head_dim;
  const int64_t rope_dim = config_.qk_rope_head_dim;
  const int64_t rank = config_.kv_lora_rank;
  const int64_t v_dim = config_.v_head_dim;
  if (static_cast<int64_t>(x.size()) != total_tokens * hidden ||
      static_cast<int64_t>(output.size()) != total_tokens * hidden) {
    return absl::InvalidArgumentError(absl::StrCat("attention input/output must be [", total_tokens, ", ",
                                                   hidden, "]"));
  }
  // Queries for every token: [T, heads * qk_dim].
  std::vector<float> queries(total_tokens * heads * qk_dim);
  if (config_.q_lora_rank) {
    const int64_t q_rank = *config_.q_lora_rank;
    std::vector<float> compressed(total_tokens * q_rank);
    backend_.Linear(x, total_tokens, hidden, w.q_a_proj.values(), q_rank, compressed);
    backend_.RmsNorm(compressed, total_tokens, q_rank, w.q_a_layernorm.values(), kLatentNormEpsilon, compressed);
    backend_.Linear(compressed, total_tokens, q_rank, w.q_b_proj.values(), heads * qk_dim, queries);
  } else {
    backend_.Linear(x, total_tokens, hidden, w.q_proj.values(), heads * qk_dim, queries);
  }
  // Latent and shared rope key for every token: [T, rank + rope_dim].
  std::vector<float> kv(total_tokens * (rank + rope_dim));
  backend_.Linear(x, total_tokens, hidden, w.kv_a_proj_with_mqa.values(), rank + rope_dim, kv);

  std::vector<float> context(total_tokens * heads * v_dim);
  std::vector<float> latents, rope_keys;
  for (const AttentionSequence& sequence : sequences) {
    const int64_t tokens = sequence.num_tokens;
    if (tokens <= 0) continue;
    LatentKvCache& cache = *sequence.cache;
    const int64_t start = cache.length();
    if (cache.LayerLength(layer) != start) {
      return absl::InternalError(absl::StrCat("KV cache layer ", layer, " out of step: holds ",
                                              cache.LayerLength(layer), " tokens, committed ", start));
    }
    latents.resize(tokens * rank);
    rope_keys.resize(tokens * rope_dim);
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = sequence.first_row + t;
      const float* kv_row = kv.data() + row * (rank + rope_dim);
      std::copy(kv_row, kv_row + rank, latents.data() + t * rank);
      std::copy(kv_row + rank, kv_row + rank + rope_dim, rope_keys.data() + t * rope_dim);
      rope_.Apply(std::span<float>(rope_keys.data() + t * rope_dim, rope_dim), start + t);
      for (int64_t h = 0; h < heads; ++h) {
        rope_.Apply(std::span<float>(queries.data() + (row * heads + h) * qk_dim + nope, rope_dim), start + t);
      }
    }
    backend_.RmsNorm(latents, tokens, rank, w.kv_a_layernorm.values(), kLatentNormEpsilon, latents);
    cache.Append(layer, latents, rope_keys, tokens);

    const int64_t cache_length = cache.LayerLength(layer);
    std::span<const float> sequence_queries(queries.data() + sequence.first_row * heads * qk_dim,
                                            tokens * heads * qk_dim);
    std::span<float> sequence_context(context.data() + sequence.first_row * heads * v_dim, tokens * heads * v_dim);
    const AttentionAlgorithm algorithm = tokens == 1 ? decode : prefill;
    if (algorithm == AttentionAlgorithm::kAbsorbed) {
      AttendAbsorbed(w, cache.Latents(layer), cache.RopeKeys(layer), cache_length, start, sequence_queries,
                     tokens, sequence_context);
    } else {
      AttendNaive(w, cache.Latents(layer), cache.RopeKeys(layer), cache_length, start, sequence_queries,
                  tokens, sequence_context);
    }
  }
  backend_.Linear(context, total_tokens, heads * v_dim, w.o_proj.values(), hidden, output);
  return absl::OkStatus();
}

void MlaAttention::MaskedSoftmax(std::span<float> scores, int64_t tokens, int64_t cache_length,
                                 int64_t start_position) const {
  for (int64_t t = 0; t < tokens; ++t) {
    std::span<float> row = scores.subspan(t * cache_length, cache_length);
    const int64_t last_visible = start_position + t;  // causal: keys at positions <= own
    for (int64_t s = 0; s < cache_length; ++s) {
      row[s] = s <= last_visible ? row[s] * softmax_scale_ : -std::numeric_limits<float>::infinity();
    }
    ops::SoftmaxInPlace(row);
  }
}

void MlaAttention::AttendNaive(const AttentionWeights& w, std::span<const float> latents,
                               std::span<const float> rope_keys, int64_t cache_length,
                               int64_t start_position, std::span<const float> queries, int64_t tokens,
                               std::span<float> context) const {
  const int64_t heads = config_.num_attention_heads;
  const int64_t qk_dim = config_.qk_head_dim();
  const int64_t nope = config_.qk_nope_head_dim;
  const int64_t rope_dim = config_.qk_rope_head_dim;
  const int64_t rank = config_.kv_lora_rank;
  const int64_t v_dim = config_.v_head_dim;
  const int64_t per_head = nope + v_dim;
  // Expand every cached latent into per-head keys and values: [S, heads * (nope + v_dim)].
  std::vector<float> expanded(cache_length * heads * per_head);
  backend_.Linear(latents, cache_length, rank, w.kv_b_proj.values(), heads * per_head, expanded);
  std::vector<float> head_queries(tokens * qk_dim), head_keys(cache_length * qk_dim);
  std::vector<float> head_values(cache_length * v_dim), scores(tokens * cache_length), head_out(tokens * v_dim);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t t = 0; t < tokens; ++t) {
      const float* q = queries.data() + (t * heads + h) * qk_dim;
      std::copy(q, q + qk_dim, head_queries.data() + t * qk_dim);
    }
    for (int64_t s = 0; s < cache_length; ++s) {
      const float* e = expanded.data() + (s * heads + h) * per_head;
      std::copy(e, e + nope, head_keys.data() + s * qk_dim);
      std::copy(rope_keys.data() + s * rope_dim, rope_keys.data() + (s + 1) * rope_dim,
                head_keys.data() + s * qk_dim + nope);
      std::copy(e + nope, e + per_head, head_values.data() + s * v_dim);
    }
    ops::MatMulTransposed(head_queries, tokens, qk_dim, head_keys, cache_length, scores);
    MaskedSoftmax(scores, tokens, cache_length, start_position);
    ops::MatMul(scores, tokens, cache_length, head_values, v_dim, head_out);
    for (int64_t t = 0; t < tokens; ++t) {
      std::copy(head_out.data() + t * v_dim, head_out.data() + (t + 1) * v_dim,
                context.data() + (t * heads + h) * v_dim);
    }
  }
}

void MlaAttention::AttendAbsorbed(const AttentionWeights& w, std::span<const float> latents,
                                  std::span<const float> rope_keys, int64_t cache_length,
                                  int64_t start_position, std::span<const float> queries, int64_t tokens,
                                  std::span<float> context) const {
  const int64_t heads = config_.num_attention_heads;
  const int64_t qk_dim = config_.qk_head_dim();
  const int64_t nope = config_.qk_nope_head_dim;
  const int64_t rope_dim = config_.qk_rope_head_dim;
  const int64_t rank = config_.kv_lora_rank;
  const int64_t v_dim = config_.v_head_dim;
  const int64_t per_head = nope + v_dim;
  std::vector<float> query_nope(tokens * nope), query_rope(tokens * rope_dim), absorbed(tokens * rank);
  std::vector<float> scores(tokens * cache_length), latent_context(tokens * rank), head_out(tokens * v_dim);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t t = 0; t < tokens; ++t) {
      const float* q = queries.data() + (t * heads + h) * qk_dim;
      std::copy(q, q + nope, query_nope.data() + t * nope);
      std::copy(q + nope, q + qk_dim, query_rope.data() + t * rope_dim);
    }
    // kv_b_proj rows of head h: key part [nope, rank], then value part [v_dim, rank].
    std::span<const float> key_up = w.kv_b_proj.values().subspan(h * per_head * rank, nope * rank);
    std::span<const float> value_up = w.kv_b_proj.values().subspan((h * per_head + nope) * rank, v_dim * rank);
    // q_nope . (W_k c) = (q_nope W_k) . c: the query moves into latent space.
    ops::MatMul(query_nope, tokens, nope, key_up, rank, absorbed);
    ops::MatMulTransposed(absorbed, tokens, rank, latents, cache_length, scores);
    ops::MatMulTransposed(query_rope, tokens, rope_dim, rope_keys, cache_length, scores, /*accumulate=*/true);
    MaskedSoftmax(scores, tokens, cache_length, start_position);
    // sum_s p_s (W_v c_s) = W_v (sum_s p_s c_s).
    ops::MatMul(scores, tokens, cache_length, latents, rank, latent_context);
    ops::MatMulTransposed(latent_context, tokens, rank, value_up, v_dim, head_out);
    for (int64_t t = 0; t < tokens; ++t) {
      std::copy(head_out.data() + t * v_dim, head_out.data() + (t + 1) * v_dim,
                context.data() + (t * heads + h) * v_dim);
    }
  }
}

}  // namespace expertmesh
