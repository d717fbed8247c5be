// Attention-side kernels of the GPU model (see model_kernels.h): embedding, add + RMSNorm, MLA
// prepare (RoPE, latent norm, paged cache write), absorbed MLA attention, naive-attention helpers.
// The choosing kernels (MoE gate, argmax, greedy advance) are in choice_kernels.cu.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
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
                                 int64_t cols, float eps, float* out, __nv_bfloat16* out_bf16) {
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
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float value = weight[c] * (x[c] * inverse_rms);
    out[row * cols + c] = value;
    if (out_bf16 != nullptr) out_bf16[row * cols + c] = __float2bfloat16_rn(value);
  }
}

// The same for rows of at most kNormThreads * 4 * kNormVectors columns (cols % 4 == 0): each
// thread keeps its float4s in registers, so the row is read once and written once.
constexpr int kNormThreads = 512;
constexpr int kNormVectors = 4;

__global__ void __launch_bounds__(kNormThreads)
AddRmsNormRegistersKernel(float* residual, const float* delta, const int32_t* source_rows, const float* weight,
                          int64_t cols, float eps, float* out, __nv_bfloat16* out_bf16) {
  const int64_t row = blockIdx.x;
  float4* x = reinterpret_cast<float4*>(residual + (source_rows != nullptr ? int64_t(source_rows[row]) : row) * cols);
  const float4* d = delta != nullptr && source_rows == nullptr ? reinterpret_cast<const float4*>(delta + row * cols)
                                                               : nullptr;
  const int64_t quads = cols / 4;
  float4 v[kNormVectors];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kNormVectors; ++i) {
    const int64_t q = threadIdx.x + int64_t(i) * kNormThreads;
    v[i] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (q < quads) {
      v[i] = x[q];
      if (d != nullptr) {
        const float4 e = d[q];
        v[i].x += e.x;
        v[i].y += e.y;
        v[i].z += e.z;
        v[i].w += e.w;
        x[q] = v[i];
      }
      sum += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
    }
  }
  const float inverse_rms = rsqrtf(BlockSum(sum) / float(cols) + eps);
  float4* o = reinterpret_cast<float4*>(out + row * cols);
  const float4* w = reinterpret_cast<const float4*>(weight);
#pragma unroll
  for (int i = 0; i < kNormVectors; ++i) {
    const int64_t q = threadIdx.x + int64_t(i) * kNormThreads;
    if (q < quads) {
      const float4 s = w[q];
      const float4 value = make_float4(s.x * (v[i].x * inverse_rms), s.y * (v[i].y * inverse_rms),
                                       s.z * (v[i].z * inverse_rms), s.w * (v[i].w * inverse_rms));
      o[q] = value;
      if (out_bf16 != nullptr) {
        __nv_bfloat162 low = __floats2bfloat162_rn(value.x, value.y), high = __floats2bfloat162_rn(value.z, value.w);
        reinterpret_cast<uint2*>(out_bf16 + row * cols)[q] =
            make_uint2(*reinterpret_cast<uint32_t*>(&low), *reinterpret_cast<uint32_t*>(&high));
      }
    }
  }
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

// RoPE of pair i of `source` into `destination` (which may be `source`: both values are read first).
__device__ __forceinline__ void RotatePairTo(const float* source, float* destination, int64_t i, int64_t half,
                                             bool interleaved, float c, float s) {
  const int64_t first = interleaved ? 2 * i : i;
  const int64_t second = interleaved ? 2 * i + 1 : i + half;
  const float x = source[first], y = source[second];
  destination[first] = x * c - y * s;
  destination[second] = y * c + x * s;
}

// The three independent parts are issued without barriers between them (the shared key is
// rotated from kv straight into the cache), so their memory latencies overlap.
__global__ void MlaPrepareKernel(float* q, const float* kv, const float* kv_norm_weight, float eps, const float* cos,
                                 const float* sin, bool interleaved, MlaDims dims, PagedCacheView cache) {
  const int64_t token = blockIdx.x;
  const int64_t position = cache.token_pos[token];
  const int64_t row_width = dims.rank + dims.rope;
  const int64_t half = dims.rope / 2;
  const float* kv_row = kv + token * row_width;
  float* destination = CacheRow(cache, cache.token_seq[token], position, row_width);
  // The shared key: rotated pairs (one thread per pair, pairs are disjoint).
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    RotatePairTo(kv_row + dims.rank, destination + dims.rank, i, half, interleaved, cos[position * half + i],
                 sin[position * half + i]);
  }
  const int64_t qk = dims.nope + dims.rope;
  for (int64_t index = threadIdx.x; index < dims.heads * half; index += blockDim.x) {
    const int64_t h = index / half, i = index - h * half;
    float* q_rope = q + (token * dims.heads + h) * qk + dims.nope;
    RotatePairTo(q_rope, q_rope, i, half, interleaved, cos[position * half + i], sin[position * half + i]);
  }
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < dims.rank; c += blockDim.x) sum += kv_row[c] * kv_row[c];
  const float inverse_rms = rsqrtf(BlockSum(sum) / float(dims.rank) + eps);
  for (int64_t c = threadIdx.x; c < dims.rank; c += blockDim.x) {
    destination[c] = kv_norm_weight[c] * (kv_row[c] * inverse_rms);
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
                   PagedCacheView cache, float* __restrict__ context, int splits, float* __restrict__ partial) {
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
  // Split-k over the cached positions (flash-decoding): block z takes a chunk-aligned range.
  const int64_t length = position + 1;
  const int64_t per_split =
      ((length + splits - 1) / splits + kChunkPositions - 1) / kChunkPositions * kChunkPositions;
  const int64_t range_begin = int64_t(blockIdx.z) * per_split;
  const int64_t range_end = range_begin + per_split < length ? range_begin + per_split : length;
  for (int64_t start = range_begin; start < range_end; start += kChunkPositions) {
    const int count = static_cast<int>(range_end - start < kChunkPositions ? range_end - start : kChunkPositions);
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
    if (partial != nullptr) {  // unnormalised, with its running max and sum, for the combine
      float* out = partial + ((token * dims.heads + h) * splits + blockIdx.z) * (rank + 2);
#pragma unroll
      for (int i = 0; i < kRankPerLane; ++i) {
        const int64_t d = lane + 32 * i;
        if (d < rank) out[d] = accumulator[hh][i];
      }
      if (lane == 0) {
        out[rank] = running_max[hh];
        out[rank + 1] = running_sum[hh];
      }
      continue;
    }
    const float inverse = 1.0f / running_sum[hh];
#pragma unroll
    for (int i = 0; i < kRankPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < rank) context[(token * dims.heads + h) * rank + d] = accumulator[hh][i] * inverse;
    }
  }
}

// context[t, h, :] from the splits' partials: sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) sum_s.
// The split weights are computed once per row (shared memory); empty splits (sum 0) drop out.
constexpr int kMaxAttentionSplits = 16;

__global__ void __launch_bounds__(256)
MlaAttentionCombineKernel(const float* __restrict__ partial, int splits, int64_t rank, float* __restrict__ context) {
  __shared__ float weight[kMaxAttentionSplits];
  __shared__ float inverse;
  const int64_t row = blockIdx.x;  // token * heads + head
  const float* parts = partial + row * splits * (rank + 2);
  if (threadIdx.x < 32) {
    const int s = threadIdx.x;
    const float m = s < splits ? parts[s * (rank + 2) + rank] : -FLT_MAX;
    const float sum = s < splits ? parts[s * (rank + 2) + rank + 1] : 0.0f;
    float largest = m;
    for (int offset = 16; offset > 0; offset /= 2) {
      largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    }
    const float w = s < splits && sum > 0.0f ? expf(m - largest) : 0.0f;
    float denominator = w * sum;
    for (int offset = 16; offset > 0; offset /= 2) denominator += __shfl_xor_sync(0xffffffffu, denominator, offset);
    if (s < kMaxAttentionSplits) weight[s] = w;
    if (s == 0) inverse = 1.0f / denominator;
  }
  __syncthreads();
  for (int64_t d = threadIdx.x; d < rank; d += blockDim.x) {
    float total = 0.0f;
#pragma unroll
    for (int s = 0; s < kMaxAttentionSplits; ++s) {
      if (s < splits && weight[s] != 0.0f) total += weight[s] * parts[s * (rank + 2) + d];
    }
    context[row * rank + d] = total * inverse;
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

}  // namespace

absl::Status LaunchEmbeddingRows(const void* table, bool bf16, const int32_t* ids, int64_t rows, int64_t hidden,
                                 float* out, void* stream) {
  if (rows <= 0) return absl::OkStatus();
  EmbeddingRowsKernel<<<static_cast<unsigned>(rows), 256, 0, AsStream(stream)>>>(table, bf16, ids, hidden, out);
  return LastLaunchStatus("EmbeddingRowsKernel");
}

absl::Status LaunchAddRmsNorm(float* residual, const float* delta, const int32_t* source_rows, const float* weight,
                              int64_t rows, int64_t cols, float eps, float* out, void* stream, uint16_t* out_bf16) {
  if (rows <= 0) return absl::OkStatus();
  auto* copy = reinterpret_cast<__nv_bfloat16*>(out_bf16);
  const bool aligned = (reinterpret_cast<uintptr_t>(residual) | reinterpret_cast<uintptr_t>(out) |
                        reinterpret_cast<uintptr_t>(weight) | reinterpret_cast<uintptr_t>(delta) |
                        reinterpret_cast<uintptr_t>(out_bf16)) % 16 == 0;
  if (cols % 4 == 0 && cols <= int64_t(kNormThreads) * 4 * kNormVectors && aligned) {
    AddRmsNormRegistersKernel<<<static_cast<unsigned>(rows), kNormThreads, 0, AsStream(stream)>>>(
        residual, delta, source_rows, weight, cols, eps, out, copy);
    return LastLaunchStatus("AddRmsNormRegistersKernel");
  }
  AddRmsNormKernel<<<static_cast<unsigned>(rows), 256, 0, AsStream(stream)>>>(residual, delta, source_rows, weight,
                                                                              cols, eps, out, copy);
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
                                const PagedCacheView& cache, int64_t tokens, float* context, void* stream,
                                float* split_scratch, int64_t split_scratch_floats) {
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
  if (tokens * wide_blocks * 2 >= sm_count) {
    const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(wide_blocks));
    MlaAttentionKernel<kMaxHeadsPerWarp><<<grid, kAttentionWarps * 32, 0, AsStream(stream)>>>(
        q_abs, q, scale, dims, cache, context, 1, nullptr);
    return LastLaunchStatus("MlaAttentionKernel");
  }
  // Few blocks (decode at small batch): one head per warp, and the positions split over up to 16
  // blocks when `split_scratch` holds the partials.
  const int64_t narrow_blocks = (dims.heads + kAttentionWarps - 1) / kAttentionWarps;
  int64_t splits = std::min<int64_t>(kMaxAttentionSplits, sm_count / std::max<int64_t>(tokens * narrow_blocks, 1));
  if (splits < 2 || split_scratch == nullptr || tokens * dims.heads * splits * (dims.rank + 2) > split_scratch_floats) {
    splits = 1;
  }
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(narrow_blocks), static_cast<unsigned>(splits));
  MlaAttentionKernel<1><<<grid, kAttentionWarps * 32, 0, AsStream(stream)>>>(q_abs, q, scale, dims, cache, context,
                                                                            static_cast<int>(splits),
                                                                            splits > 1 ? split_scratch : nullptr);
  if (absl::Status launched = LastLaunchStatus("MlaAttentionKernel"); !launched.ok() || splits == 1) return launched;
  MlaAttentionCombineKernel<<<static_cast<unsigned>(tokens * dims.heads), 256, 0, AsStream(stream)>>>(
      split_scratch, static_cast<int>(splits), dims.rank, context);
  return LastLaunchStatus("MlaAttentionCombineKernel");
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

}  // namespace expertmesh::cuda
