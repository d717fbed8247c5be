// Launchers for the attention-side kernels of the GPU model: embedding rows, fused residual add +
// RMSNorm, MLA preparation (RoPE/YaRN on queries and the shared key, kv_a_layernorm, write into
// the paged latent cache), weight-absorbed MLA attention over the paged cache (online softmax,
// one pass over the latents shared by a block's heads), DeepSeek MoE gating (RouteTokens'
// semantics), and greedy argmax with the on-device decode-loop bookkeeping. Plain C++ header;
// every activation is float32; `stream` is a cudaStream_t.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace expertmesh::cuda {

// out[r, :] = float(table[ids[r], :]); table is bf16 (`bf16`) or float32 [vocab, hidden].
absl::Status LaunchEmbeddingRows(const void* table, bool bf16, const int32_t* ids, int64_t rows, int64_t hidden,
                                 float* out, void* stream);

// residual[r] += delta[r] (when delta != null), then out[r] = weight * (residual[r] / rms). With
// source_rows != null, out row r normalises residual[source_rows[r]] instead and nothing is added.
// out_bf16 (may be null) receives out rounded to bf16 as well (a GEMM's input, no conversion pass).
absl::Status LaunchAddRmsNorm(float* residual, const float* delta, const int32_t* source_rows, const float* weight,
                              int64_t rows, int64_t cols, float eps, float* out, void* stream,
                              uint16_t* out_bf16 = nullptr);

// a[i] += b[i].
absl::Status LaunchAddInPlace(float* a, const float* b, int64_t count, void* stream);

// Where tokens live: token t is at position token_pos[t] of sequence token_seq[t], whose pages are
// block_table[token_seq[t] * max_pages + position / page_tokens]. A cache layer is a float32
// pool [pages, page_tokens, kv_lora_rank + rope_dim] (normalised latent, then rotated key).
struct PagedCacheView {
  float* layer = nullptr;
  const int32_t* token_pos = nullptr;
  const int32_t* token_seq = nullptr;
  const int32_t* block_table = nullptr;
  int64_t max_pages = 0;
  int64_t page_tokens = 0;
};

struct MlaDims {
  int64_t heads = 0, nope = 0, rope = 0, rank = 0;  // qk_head_dim = nope + rope
};

// Rotates q's rope part of every head and kv's shared key (cos/sin tables [positions, rope/2],
// already scaled by the YaRN attention factor; interleaved or half-split pairs), normalises kv's
// latent with kv_norm_weight, and writes latent + key to the cache at each token's position.
absl::Status LaunchMlaPrepare(float* q, const float* kv, const float* kv_norm_weight, float eps, const float* cos,
                              const float* sin, int64_t table_positions, bool interleaved, const MlaDims& dims,
                              const PagedCacheView& cache, int64_t tokens, void* stream);

// context[t, h, :] = sum_s softmax_s(scale * (q_abs[t,h] . c_s + q_rope[t,h] . k_s)) c_s over the
// cached positions s <= token_pos[t] (causal). q_abs is [tokens, heads, rank]; q_rope is read from
// q [tokens, heads, nope + rope] at offset nope. rank <= 512, rope <= 64.
// With few blocks (small decode batches) the cached positions are split over several blocks
// whose partial results (`split_scratch`, tokens * heads * splits * (rank + 2) floats; null = no
// split) a second kernel combines.
absl::Status LaunchMlaAttention(const float* q_abs, const float* q, float scale, const MlaDims& dims,
                                const PagedCacheView& cache, int64_t tokens, float* context, void* stream,
                                float* split_scratch = nullptr, int64_t split_scratch_floats = 0);

// Naive (prefill) attention: copies positions [0, positions) of `sequence` out of the paged cache
// layer into out [positions, row_width] (latent, then rotated key).
absl::Status LaunchGatherSequenceCache(const PagedCacheView& cache, int64_t sequence, int64_t positions,
                                       int64_t row_width, float* out, void* stream);

// scores [heads * queries, keys] (one row per head and query; query q sits at position start + q)
// -> causal softmax(scale * scores), zero past the query's own position.
absl::Status LaunchCausalSoftmax(float* scores, int64_t heads, int64_t queries, int64_t keys, int64_t start,
                                 float scale, void* stream);

struct GateConfig {
  int64_t experts = 0, top_k = 0, groups = 1, topk_group = 1;
  int method = 0;  // 0 greedy, 1 group_limited_greedy, 2 noaux_tc
  bool sigmoid = false;
  bool normalize = false;  // norm_topk_prob (V3 only)
  float scaling = 1.0f;
};

// RouteTokens on the device: logits [tokens, experts] -> ids/weights [tokens, top_k]. bias
// (noaux_tc's e_score_correction_bias) may be null. experts <= 256, top_k <= 16.
absl::Status LaunchMoeGate(const float* logits, const float* bias, const GateConfig& gate, int64_t tokens,
                           int32_t* ids, float* weights, void* stream);

// out[r] = argmax(logits[r, :]) (first index among equal maxima).
absl::Status LaunchArgMaxRows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, void* stream);

// Greedy decode bookkeeping fused into the argmax: next = argmax(logits[b]); token_ids[b] = next;
// generated[b * max_steps + token_pos[b] - first_pos[b]] = next; token_pos[b] += 1.
// With `scratch` (batch * ceil(vocab / 2048, at most 64) * 8 bytes) the argmax runs over vocab
// slices in parallel and a second kernel merges them; without, one block per row.
absl::Status LaunchGreedyAdvance(const float* logits, int64_t batch, int64_t vocab, int32_t* token_ids,
                                 int32_t* token_pos, const int32_t* first_pos, int32_t* generated, int64_t max_steps,
                                 void* stream, void* scratch = nullptr, int64_t scratch_bytes = 0);

}  // namespace expertmesh::cuda
