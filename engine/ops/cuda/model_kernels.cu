// Attention-side kernels of the GPU model (see model_kernels.h): embedding, add + RMSNorm, MLA
// prepare (RoPE, latent norm, paged cache write), absorbed MLA attention, MoE gate, argmax.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/model_kernels.h"

namespace expertmesh::cuda {
namespace {

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ float BlockSum(float value) {
  __shared__ float warp_sums[32];
  __shared__ float total;
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  if (warp == 0) {
    float v = lane < blockDim.x / 32 ? warp_sums[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (lane == 0) total = v;
  }
  __syncthreads();
  const float result = total;
  __syncthreads();  // `total` may be reused by the next call
  return result;
}

__global__ void EmbeddingRowsKernel(const void* table, bool bf16, const int32_t* ids, int64_t hidden, float* out) {
  const int64_t row = blockIdx.x;
  const int64_t id = ids[row];
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    out[row * hidden + c] = bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(table)[id * hidden + c])
                                 : static_cast<const float*>(table)[id * hidden + c];
  }
}

__global__ void AddRmsNormKernel(float* residual, const float* delta, const int32_t* source_rows, const float* weight,
                                 int64_t cols, float eps, float* out) {
  const int64_t row = blockIdx.x;
  float* x = residual + (source_rows != nullptr ? int64_t(source_rows[row]) : row) * cols;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = x[c];
    if (delta != nullptr && source_rows == nullptr) {
      v += delta[row * cols + c];
      x[c] = v;
    }
    sum += v * v;
  }
  const float inverse_rms = rsqrtf(BlockSum(sum) / float(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[row * cols + c] = weight[c] * (x[c] * inverse_rms);
}

__global__ void AddInPlaceKernel(float* a, const float* b, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    a[i] += b[i];
  }
}

__device__ __forceinline__ float* CacheRow(const PagedCacheView& cache, int64_t seq, int64_t position, int64_t row) {
  const int64_t page = cache.block_table[seq * cache.max_pages + position / cache.page_tokens];
  return cache.layer + (page * cache.page_tokens + position % cache.page_tokens) * row;
}

__device__ __forceinline__ void RotatePair(float* v, int64_t i, int64_t half, bool interleaved, float c, float s) {
  const int64_t first = interleaved ? 2 * i : i;
  const int64_t second = interleaved ? 2 * i + 1 : i + half;
  const float x = v[first], y = v[second];
  v[first] = x * c - y * s;
  v[second] = y * c + x * s;
}

__global__ void MlaPrepareKernel(float* q, const float* kv, const float* kv_norm_weight, float eps, const float* cos,
                                 const float* sin, bool interleaved, MlaDims dims, PagedCacheView cache) {
  const int64_t token = blockIdx.x;
  const int64_t position = cache.token_pos[token];
  const int64_t row_width = dims.rank + dims.rope;
  const int64_t half = dims.rope / 2;
  const float* kv_row = kv + token * row_width;
  float* destination = CacheRow(cache, cache.token_seq[token], position, row_width);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < dims.rank; c += blockDim.x) sum += kv_row[c] * kv_row[c];
  const float inverse_rms = rsqrtf(BlockSum(sum) / float(dims.rank) + eps);
  for (int64_t c = threadIdx.x; c < dims.rank; c += blockDim.x) {
    destination[c] = kv_norm_weight[c] * (kv_row[c] * inverse_rms);
  }
  // The shared key: copy, then rotate in place (one thread per pair, pairs are disjoint).
  for (int64_t c = threadIdx.x; c < dims.rope; c += blockDim.x) destination[dims.rank + c] = kv_row[dims.rank + c];
  __syncthreads();
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    RotatePair(destination + dims.rank, i, half, interleaved, cos[position * half + i], sin[position * half + i]);
  }
  const int64_t qk = dims.nope + dims.rope;
  for (int64_t index = threadIdx.x; index < dims.heads * half; index += blockDim.x) {
    const int64_t h = index / half, i = index - h * half;
    RotatePair(q + (token * dims.heads + h) * qk + dims.nope, i, half, interleaved, cos[position * half + i],
               sin[position * half + i]);
  }
}

constexpr int kAttentionWarps = 8;
// Heads per warp: 2 normally (the staged cache rows serve both); 1 when the grid would have
// fewer blocks than half the SMs (batch-1 decode), doubling the blocks that share the work.
constexpr int kMaxHeadsPerWarp = 2;
constexpr int kChunkPositions = 16;
constexpr int kMaxRank = 512;
constexpr int kMaxRope = 64;
constexpr int kRankPerLane = kMaxRank / 32;
constexpr int kRopePerLane = kMaxRope / 32;
constexpr int kChunkRow = kMaxRank + kMaxRope;

template <int kHeadsPerWarp>
__global__ void __launch_bounds__(kAttentionWarps * 32)
MlaAttentionKernel(const float* __restrict__ q_abs, const float* __restrict__ q, float scale, MlaDims dims,
                   PagedCacheView cache, float* __restrict__ context) {
  __shared__ float chunk[kChunkPositions * kChunkRow];
  const int64_t token = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t first_head = (int64_t(blockIdx.y) * kAttentionWarps + warp) * kHeadsPerWarp;
  const int64_t position = cache.token_pos[token];
  const int64_t seq = cache.token_seq[token];
  const int64_t rank = dims.rank, rope = dims.rope, qk = dims.nope + dims.rope;
  const int64_t row_width = rank + rope;
  float query_latent[kHeadsPerWarp][kRankPerLane], query_rope[kHeadsPerWarp][kRopePerLane];
  float accumulator[kHeadsPerWarp][kRankPerLane], running_max[kHeadsPerWarp], running_sum[kHeadsPerWarp];
#pragma unroll
  for (int hh = 0; hh < kHeadsPerWarp; ++hh) {
    const int64_t h = first_head + hh;
    const bool ok = h < dims.heads;
#pragma unroll
    for (int i = 0; i < kRankPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      query_latent[hh][i] = ok && d < rank ? q_abs[(token * dims.heads + h) * rank + d] : 0.0f;
      accumulator[hh][i] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kRopePerLane; ++i) {
      const int64_t d = lane + 32 * i;
      query_rope[hh][i] = ok && d < rope ? q[(token * dims.heads + h) * qk + dims.nope + d] : 0.0f;
    }
    running_max[hh] = -FLT_MAX;
    running_sum[hh] = 0.0f;
  }
  const int64_t length = position + 1;
  for (int64_t start = 0; start < length; start += kChunkPositions) {
    const int count = static_cast<int>(length - start < kChunkPositions ? length - start : kChunkPositions);
    __syncthreads();
    // One warp per cached position: its row address once, then 16-byte copies (latent, then key).
    for (int j = warp; j < count; j += kAttentionWarps) {
      const float* source = CacheRow(cache, seq, start + j, row_width);
      float* destination = chunk + j * kChunkRow;
      for (int d = lane * 4; d < rank; d += 128) {
        *reinterpret_cast<float4*>(destination + d) = *reinterpret_cast<const float4*>(source + d);
      }
      for (int d = lane * 4; d < rope; d += 128) {
        *reinterpret_cast<float4*>(destination + kMaxRank + d) = *reinterpret_cast<const float4*>(source + rank + d);
      }
    }
    __syncthreads();
    for (int j = 0; j < count; ++j) {
      const float* latent = chunk + j * kChunkRow;
#pragma unroll
      for (int hh = 0; hh < kHeadsPerWarp; ++hh) {
        if (first_head + hh >= dims.heads) continue;  // warp-uniform
        float partial = 0.0f;
#pragma unroll
        for (int i = 0; i < kRankPerLane; ++i) {
          if (lane + 32 * i < rank) partial += query_latent[hh][i] * latent[lane + 32 * i];
        }
#pragma unroll
        for (int i = 0; i < kRopePerLane; ++i) {
          if (lane + 32 * i < rope) partial += query_rope[hh][i] * latent[kMaxRank + lane + 32 * i];
        }
        for (int offset = 16; offset > 0; offset /= 2) partial += __shfl_xor_sync(0xffffffffu, partial, offset);
        const float score = partial * scale;
        const float new_max = fmaxf(running_max[hh], score);
        const float correction = expf(running_max[hh] - new_max);
        const float weight = expf(score - new_max);
        running_sum[hh] = running_sum[hh] * correction + weight;
#pragma unroll
        for (int i = 0; i < kRankPerLane; ++i) {
          const float value = lane + 32 * i < rank ? latent[lane + 32 * i] : 0.0f;
          accumulator[hh][i] = accumulator[hh][i] * correction + weight * value;
        }
        running_max[hh] = new_max;
      }
    }
  }
#pragma unroll
  for (int hh = 0; hh < kHeadsPerWarp; ++hh) {
    const int64_t h = first_head + hh;
    if (h >= dims.heads) continue;
    const float inverse = 1.0f / running_sum[hh];
#pragma unroll
    for (int i = 0; i < kRankPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < rank) context[(token * dims.heads + h) * rank + d] = accumulator[hh][i] * inverse;
    }
  }
}

// ---- naive (prefill) attention helpers ---------------------------------------------------------

__global__ void GatherSequenceCacheKernel(PagedCacheView cache, int64_t seq, int64_t row_width, float* out) {
  const int64_t position = blockIdx.x;
  const float* source = CacheRow(cache, seq, position, row_width);
  for (int64_t d = threadIdx.x; d < row_width; d += blockDim.x) out[position * row_width + d] = source[d];
}

__global__ void CausalSoftmaxKernel(float* scores, int64_t queries, int64_t keys, int64_t start, float scale) {
  const int64_t row = blockIdx.x;  // head * queries + query
  const int64_t visible = start + row % queries + 1;  // keys at positions <= the query's own
  float* values = scores + row * keys;
  float largest = -INFINITY;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) largest = fmaxf(largest, values[s] * scale);
  __shared__ float warp_max[32];
  for (int offset = 16; offset > 0; offset /= 2) largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = largest;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? warp_max[threadIdx.x] : -INFINITY;
    for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    if (threadIdx.x == 0) warp_max[0] = v;
  }
  __syncthreads();
  largest = warp_max[0];
  float sum = 0.0f;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) {
    const float e = expf(values[s] * scale - largest);
    values[s] = e;
    sum += e;
  }
  const float inverse = 1.0f / BlockSum(sum);
  for (int64_t s = threadIdx.x; s < keys; s += blockDim.x) values[s] = s < visible ? values[s] * inverse : 0.0f;
}

// ---- MoE gate ---------------------------------------------------------------------------------

constexpr int kGateWarps = 4;
constexpr int kMaxGateExperts = 256;
constexpr int kMaxTopK = 16;

// RouteTokens' total order: larger first, NaN last, lower index first.
__device__ __forceinline__ bool Better(float a, int ia, float b, int ib) {
  const bool a_nan = isnan(a), b_nan = isnan(b);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a != b) return a > b;
  return ia < ib;
}

__global__ void __launch_bounds__(kGateWarps * 32)
MoeGateKernel(const float* __restrict__ logits, const float* __restrict__ bias, GateConfig gate, int64_t tokens,
              int32_t* __restrict__ ids, float* __restrict__ weights) {
  __shared__ float scores_all[kGateWarps][kMaxGateExperts];
  __shared__ float choice_all[kGateWarps][kMaxGateExperts];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t token = int64_t(blockIdx.x) * kGateWarps + warp;
  if (token >= tokens) return;  // whole warps only; no block barriers below
  float* scores = scores_all[warp];
  float* choice = choice_all[warp];
  const int experts = static_cast<int>(gate.experts);
  const float* row = logits + token * experts;
  if (gate.sigmoid) {
    for (int e = lane; e < experts; e += 32) scores[e] = 1.0f / (1.0f + expf(-row[e]));
  } else {
    float largest = -INFINITY;
    for (int e = lane; e < experts; e += 32) largest = fmaxf(largest, row[e]);
    for (int offset = 16; offset > 0; offset /= 2) largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    double total = 0.0;
    for (int e = lane; e < experts; e += 32) {
      const float v = expf(row[e] - largest);
      scores[e] = v;
      total += v;
    }
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_xor_sync(0xffffffffu, total, offset);
    const float inverse = static_cast<float>(1.0 / total);
    for (int e = lane; e < experts; e += 32) scores[e] *= inverse;
  }
  const bool uses_bias = gate.method == 2 && bias != nullptr;
  for (int e = lane; e < experts; e += 32) choice[e] = scores[e] + (uses_bias ? bias[e] : 0.0f);
  __syncwarp();
  const bool group_limited = gate.method != 0 && gate.groups > 1;
  if (group_limited && lane == 0) {
    const int groups = static_cast<int>(gate.groups);
    const int per_group = experts / groups;
    float group_score[kMaxGateExperts];
    for (int g = 0; g < groups; ++g) {
      const float* members = choice + g * per_group;
      int best = 0;
      for (int i = 1; i < per_group; ++i) {
        if (Better(members[i], i, members[best], best)) best = i;
      }
      if (gate.method == 2) {
        int second = -1;
        for (int i = 0; i < per_group; ++i) {
          if (i != best && (second < 0 || Better(members[i], i, members[second], second))) second = i;
        }
        group_score[g] = members[best] + (second >= 0 ? members[second] : 0.0f);
      } else {
        group_score[g] = members[best];
      }
    }
    bool kept[kMaxGateExperts] = {};
    for (int k = 0; k < gate.topk_group && k < groups; ++k) {
      int best = -1;
      for (int g = 0; g < groups; ++g) {
        if (!kept[g] && (best < 0 || Better(group_score[g], g, group_score[best], best))) best = g;
      }
      kept[best] = true;
    }
    for (int e = 0; e < experts; ++e) {
      if (!kept[e / per_group]) choice[e] = -INFINITY;
    }
  }
  __syncwarp();
  int chosen[kMaxTopK];
#pragma unroll
  for (int k = 0; k < kMaxTopK; ++k) chosen[k] = -1;
  for (int k = 0; k < gate.top_k; ++k) {
    float best_value = NAN;
    int best_index = -1;
    for (int e = lane; e < experts; e += 32) {
      bool taken = false;
#pragma unroll
      for (int c = 0; c < kMaxTopK; ++c) taken |= chosen[c] == e;
      if (taken) continue;
      if (best_index < 0 || Better(choice[e], e, best_value, best_index)) {
        best_value = choice[e];
        best_index = e;
      }
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other_value = __shfl_xor_sync(0xffffffffu, best_value, offset);
      const int other_index = __shfl_xor_sync(0xffffffffu, best_index, offset);
      if (other_index >= 0 && (best_index < 0 || Better(other_value, other_index, best_value, best_index))) {
        best_value = other_value;
        best_index = other_index;
      }
    }
#pragma unroll
    for (int c = 0; c < kMaxTopK; ++c) {
      if (c == k) chosen[c] = best_index;
    }
  }
  if (lane == 0) {
    float total = 0.0f;
    float values[kMaxTopK];
#pragma unroll
    for (int k = 0; k < kMaxTopK; ++k) {
      values[k] = k < gate.top_k ? scores[chosen[k]] : 0.0f;
      if (k < gate.top_k) total += values[k];
    }
    const float denominator = total + 1e-20f;
#pragma unroll
    for (int k = 0; k < kMaxTopK; ++k) {
      if (k >= gate.top_k) continue;
      float w = values[k];
      if (gate.normalize) w /= denominator;
      ids[token * gate.top_k + k] = chosen[k];
      weights[token * gate.top_k + k] = w * gate.scaling;
    }
  }
}

// ---- argmax -----------------------------------------------------------------------------------

constexpr int kArgMaxThreads = 1024;

__device__ int BlockArgMax(const float* row, int64_t vocab) {
  float best = -INFINITY;
  int best_index = -1;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (best_index < 0 || v > best) {
      best = v;
      best_index = static_cast<int>(i);
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, best, offset);
    const int other_index = __shfl_xor_sync(0xffffffffu, best_index, offset);
    if (other_index >= 0 && (best_index < 0 || other > best || (other == best && other_index < best_index))) {
      best = other;
      best_index = other_index;
    }
  }
  __shared__ float warp_best[32];
  __shared__ int warp_index[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warp_best[warp] = best;
    warp_index[warp] = best_index;
  }
  __syncthreads();
  int result = 0;
  if (threadIdx.x == 0) {
    float b = warp_best[0];
    int bi = warp_index[0];
    for (int w = 1; w < blockDim.x / 32; ++w) {
      const int wi = warp_index[w];
      if (wi >= 0 && (bi < 0 || warp_best[w] > b || (warp_best[w] == b && wi < bi))) {
        b = warp_best[w];
        bi = wi;
      }
    }
    result = bi < 0 ? 0 : bi;
  }
  return result;  // meaningful in thread 0 only
}

__global__ void __launch_bounds__(kArgMaxThreads) ArgMaxRowsKernel(const float* logits, int64_t vocab, int32_t* out) {
  const int index = BlockArgMax(logits + int64_t(blockIdx.x) * vocab, vocab);
  if (threadIdx.x == 0) out[blockIdx.x] = index;
}

__global__ void __launch_bounds__(kArgMaxThreads)
GreedyAdvanceKernel(const float* logits, int64_t vocab, int32_t* token_ids, int32_t* token_pos, const int32_t* first_pos,
                    int32_t* generated, int64_t max_steps) {
  const int b = blockIdx.x;
  const int index = BlockArgMax(logits + int64_t(b) * vocab, vocab);
  if (threadIdx.x == 0) {
    token_ids[b] = index;
    const int64_t step = int64_t(token_pos[b]) - first_pos[b];
    if (step >= 0 && step < max_steps) generated[b * max_steps + step] = index;
    token_pos[b] += 1;
  }
}

}  // namespace

absl::Status LaunchEmbeddingRows(const void* table, bool bf16, const int32_t* ids, int64_t rows, int64_t hidden,
                                 float* out, void* stream) {
  if (rows <= 0) return absl::OkStatus();
  EmbeddingRowsKernel<<<static_cast<unsigned>(rows), 256, 0, AsStream(stream)>>>(table, bf16, ids, hidden, out);
  return LastLaunchStatus("EmbeddingRowsKernel");
}

absl::Status LaunchAddRmsNorm(float* residual, const float* delta, const int32_t* source_rows, const float* weight,
                              int64_t rows, int64_t cols, float eps, float* out, void* stream) {
  if (rows <= 0) return absl::OkStatus();
  AddRmsNormKernel<<<static_cast<unsigned>(rows), 256, 0, AsStream(stream)>>>(residual, delta, source_rows, weight,
                                                                              cols, eps, out);
  return LastLaunchStatus("AddRmsNormKernel");
}

absl::Status LaunchAddInPlace(float* a, const float* b, int64_t count, void* stream) {
  if (count <= 0) return absl::OkStatus();
  const int64_t blocks = std::min<int64_t>((count + 255) / 256, 65535);
  AddInPlaceKernel<<<static_cast<unsigned>(blocks), 256, 0, AsStream(stream)>>>(a, b, count);
  return LastLaunchStatus("AddInPlaceKernel");
}

absl::Status LaunchMlaPrepare(float* q, const float* kv, const float* kv_norm_weight, float eps, const float* cos,
                              const float* sin, int64_t table_positions, bool interleaved, const MlaDims& dims,
                              const PagedCacheView& cache, int64_t tokens, void* stream) {
  if (dims.rope % 2 != 0) return absl::InvalidArgumentError("LaunchMlaPrepare: rope dim must be even");
  if (tokens <= 0) return absl::OkStatus();
  MlaPrepareKernel<<<static_cast<unsigned>(tokens), 128, 0, AsStream(stream)>>>(q, kv, kv_norm_weight, eps, cos, sin,
                                                                                interleaved, dims, cache);
  return LastLaunchStatus("MlaPrepareKernel");
}

absl::Status LaunchMlaAttention(const float* q_abs, const float* q, float scale, const MlaDims& dims,
                                const PagedCacheView& cache, int64_t tokens, float* context, void* stream) {
  if (dims.rank > kMaxRank || dims.rope > kMaxRope || dims.rank % 4 != 0 || dims.rope % 4 != 0) {
    return absl::InvalidArgumentError("LaunchMlaAttention: kv_lora_rank <= 512 and rope dim <= 64, multiples of 4");
  }
  if (tokens <= 0) return absl::OkStatus();
  static const int sm_count = [] {
    int device = 0, count = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0) {
      return 132;
    }
    return count;
  }();
  const int64_t wide_blocks = (dims.heads + kAttentionWarps * kMaxHeadsPerWarp - 1) / (kAttentionWarps * kMaxHeadsPerWarp);
  if (tokens * wide_blocks * 2 < sm_count) {
    const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>((dims.heads + kAttentionWarps - 1) / kAttentionWarps));
    MlaAttentionKernel<1><<<grid, kAttentionWarps * 32, 0, AsStream(stream)>>>(q_abs, q, scale, dims, cache, context);
  } else {
    const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(wide_blocks));
    MlaAttentionKernel<kMaxHeadsPerWarp><<<grid, kAttentionWarps * 32, 0, AsStream(stream)>>>(q_abs, q, scale, dims,
                                                                                              cache, context);
  }
  return LastLaunchStatus("MlaAttentionKernel");
}

absl::Status LaunchGatherSequenceCache(const PagedCacheView& cache, int64_t sequence, int64_t positions,
                                       int64_t row_width, float* out, void* stream) {
  if (positions <= 0) return absl::OkStatus();
  GatherSequenceCacheKernel<<<static_cast<unsigned>(positions), 128, 0, AsStream(stream)>>>(cache, sequence, row_width,
                                                                                           out);
  return LastLaunchStatus("GatherSequenceCacheKernel");
}

absl::Status LaunchCausalSoftmax(float* scores, int64_t heads, int64_t queries, int64_t keys, int64_t start,
                                 float scale, void* stream) {
  if (heads <= 0 || queries <= 0) return absl::OkStatus();
  if (start + queries > keys) return absl::InvalidArgumentError("LaunchCausalSoftmax: start + queries > keys");
  CausalSoftmaxKernel<<<static_cast<unsigned>(heads * queries), 256, 0, AsStream(stream)>>>(scores, queries, keys,
                                                                                            start, scale);
  return LastLaunchStatus("CausalSoftmaxKernel");
}

absl::Status LaunchMoeGate(const float* logits, const float* bias, const GateConfig& gate, int64_t tokens, int32_t* ids,
                           float* weights, void* stream) {
  if (gate.experts <= 0 || gate.experts > kMaxGateExperts || gate.top_k <= 0 || gate.top_k > kMaxTopK ||
      gate.top_k > gate.experts || gate.groups <= 0 || gate.experts % gate.groups != 0) {
    return absl::InvalidArgumentError("LaunchMoeGate: need experts <= 256, top_k <= 16, groups dividing experts");
  }
  if (tokens <= 0) return absl::OkStatus();
  MoeGateKernel<<<static_cast<unsigned>((tokens + kGateWarps - 1) / kGateWarps), kGateWarps * 32, 0, AsStream(stream)>>>(
      logits, bias, gate, tokens, ids, weights);
  return LastLaunchStatus("MoeGateKernel");
}

absl::Status LaunchArgMaxRows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, void* stream) {
  if (rows <= 0) return absl::OkStatus();
  ArgMaxRowsKernel<<<static_cast<unsigned>(rows), kArgMaxThreads, 0, AsStream(stream)>>>(logits, vocab, out);
  return LastLaunchStatus("ArgMaxRowsKernel");
}

absl::Status LaunchGreedyAdvance(const float* logits, int64_t batch, int64_t vocab, int32_t* token_ids,
                                 int32_t* token_pos, const int32_t* first_pos, int32_t* generated, int64_t max_steps,
                                 void* stream) {
  if (batch <= 0) return absl::OkStatus();
  GreedyAdvanceKernel<<<static_cast<unsigned>(batch), kArgMaxThreads, 0, AsStream(stream)>>>(
      logits, vocab, token_ids, token_pos, first_pos, generated, max_steps);
  return LastLaunchStatus("GreedyAdvanceKernel");
}

}  // namespace expertmesh::cuda
