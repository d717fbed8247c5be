// Routed-expert kernels: slot permutation by expert, row gather, mma.sync SwiGLU halves
// (bf16 or on-the-fly dequantized FP8 block-scaled weights), SiLU*up epilogue, weighted combine,
// FP8 block dequantization. Launchers are declared in moe_kernels.h.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/moe_kernels.h"

namespace expertmesh::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;   // mma kernels: 256 threads share one work unit, split along k
constexpr int kTilesPerPass = 4;    // 4 tiles of 8 rows (tokens) per pass over the weights
constexpr int kChunksPerStep = 4;   // 4 chunks of 32 k-values per unrolled step
constexpr int kPermutationThreads = 1024;

// ---- permutation --------------------------------------------------------------------------

__device__ __forceinline__ int32_t LocalSlotOf(int32_t id, const int32_t* slot_of_expert, int32_t n_routed) {
  if (id < 0 || id >= n_routed) return -1;
  return slot_of_expert[id];
}

__global__ void __launch_bounds__(kPermutationThreads)
BuildPermutationKernel(const int32_t* __restrict__ ids, int32_t num_slots, int32_t top_k,
                       const int32_t* __restrict__ slot_of_expert, int32_t n_routed, int32_t num_local,
                       int32_t* __restrict__ offsets, int32_t* __restrict__ row_token,
                       int32_t* __restrict__ row_of_slot, int32_t* __restrict__ error) {
  __shared__ int32_t counts[kPermutationThreads];
  __shared__ int32_t cursors[kPermutationThreads];
  for (int32_t e = threadIdx.x; e < num_local; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  // Pass 1: rows per local expert (shared-memory atomics), invalid ids flagged.
  for (int32_t i = threadIdx.x; i < num_slots; i += blockDim.x) {
    const int32_t id = ids[i];
    const int32_t slot = LocalSlotOf(id, slot_of_expert, n_routed);
    if (id >= n_routed || (id >= 0 && slot < 0)) atomicExch(error, 1);
    if (slot >= 0) atomicAdd(&counts[slot], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t total = 0;
    for (int32_t e = 0; e < num_local; ++e) {
      cursors[e] = total;
      offsets[e] = total;
      total += counts[e];
    }
    offsets[num_local] = total;
  }
  __syncthreads();
  // Pass 2: each slot takes the next row of its expert. The order of rows within an expert is
  // not fixed, but every row is computed independently, so results do not depend on it.
  for (int32_t i = threadIdx.x; i < num_slots; i += blockDim.x) {
    const int32_t slot = LocalSlotOf(ids[i], slot_of_expert, n_routed);
    if (slot < 0) {
      row_of_slot[i] = -1;
      continue;
    }
    const int32_t row = atomicAdd(&cursors[slot], 1);
    row_token[row] = i / top_k;
    row_of_slot[i] = row;
  }
}

// ---- gather / epilogues -------------------------------------------------------------------

__device__ __forceinline__ uint32_t PackPair16(float lo, float hi, RowType type) {
  if (type == RowType::kF16) {
    __half2 pair = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&pair);
  }
  __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&pair);
}

__global__ void GatherRowsKernel(const float* __restrict__ x, const int32_t* __restrict__ row_token,
                                 const int32_t* __restrict__ offsets, int32_t num_local, int64_t hidden,
                                 void* __restrict__ rows_out, RowType type) {
  const int32_t total_rows = offsets[num_local];
  const int64_t quads = hidden / 4;
  for (int32_t row = blockIdx.x; row < total_rows; row += gridDim.x) {
    const float4* source = reinterpret_cast<const float4*>(x + int64_t(row_token[row]) * hidden);
    if (type != RowType::kF32) {
      uint2* destination = reinterpret_cast<uint2*>(static_cast<uint16_t*>(rows_out) + int64_t(row) * hidden);
      for (int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
        const float4 v = source[q];
        destination[q] = make_uint2(PackPair16(v.x, v.y, type), PackPair16(v.z, v.w, type));
      }
    } else {
      float4* destination = reinterpret_cast<float4*>(static_cast<float*>(rows_out) + int64_t(row) * hidden);
      for (int64_t q = threadIdx.x; q < quads; q += blockDim.x) destination[q] = source[q];
    }
  }
}

__device__ __forceinline__ float Silu(float g) { return g / (1.0f + __expf(-g)); }

__global__ void SiluMultiplyRowsKernel(const float* __restrict__ gate_up, int64_t rows, int64_t intermediate,
                                       void* __restrict__ h, bool to_bf16) {
  const int64_t count = rows * intermediate;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / intermediate, j = i - r * intermediate;
    const float* row = gate_up + r * 2 * intermediate;
    const float value = Silu(row[j]) * row[intermediate + j];
    if (to_bf16) {
      static_cast<__nv_bfloat16*>(h)[i] = __float2bfloat16_rn(value);
    } else {
      static_cast<float*>(h)[i] = value;
    }
  }
}

__global__ void CombineRowsKernel(const float* __restrict__ y, const int32_t* __restrict__ row_of_slot,
                                  const float* __restrict__ gate_weights, int32_t top_k, int64_t hidden,
                                  float* __restrict__ out, bool accumulate) {
  const int64_t token = blockIdx.x;
  const int32_t* rows = row_of_slot + token * top_k;
  const float* weights = gate_weights + token * top_k;
  const int64_t quads = hidden / 4;
  float4* destination = reinterpret_cast<float4*>(out + token * hidden);
  for (int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
    float4 sum = accumulate ? destination[q] : make_float4(0.f, 0.f, 0.f, 0.f);
    for (int32_t k = 0; k < top_k; ++k) {
      const int32_t row = rows[k];
      if (row < 0) continue;
      const float w = weights[k];
      const float4 v = reinterpret_cast<const float4*>(y + int64_t(row) * hidden)[q];
      sum.x += w * v.x;
      sum.y += w * v.y;
      sum.z += w * v.z;
      sum.w += w * v.w;
    }
    destination[q] = sum;
  }
}

// ---- tensor-core expert kernels -------------------------------------------------------------
//
// mma.m16n8k16 with A = 16 weight rows x 16 k, B = 16 k x 8 rows of activations. Each thread
// (group g = lane / 4, t = lane % 4) loads 8 consecutive k-values (16 bytes of bf16) of weight
// rows g and g + 8 and of activation row g at k0 + 8t. The dot product does not care which
// physical k sits in which fragment position as long as A and B agree, so those 8 values feed
// two k16 steps: step s takes values 4s..4s+3 as the fragment columns (2t, 2t+1, 2t+8, 2t+9).

template <bool kHalf>
__device__ __forceinline__ void Mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                    uint32_t b0, uint32_t b1) {
  if constexpr (kHalf) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// Two E4M3 values -> an f16 pair, exactly (one cvt instruction on sm_89+).
__device__ __forceinline__ uint32_t Fp8PairToHalfPair(uint32_t two_bytes) {
  const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two_bytes), __NV_E4M3);
  return static_cast<uint32_t>(raw.x) | (static_cast<uint32_t>(raw.y) << 16);
}

// 8 weights of `row` at column k as four 16-bit pairs (bf16, or f16 for unscaled FP8 values);
// zeros when the row or k is out of range.
template <bool kFp8>
__device__ __forceinline__ uint4 LoadWeights(const void* weights, int64_t row, bool row_ok, int64_t k, bool k_ok,
                                             int64_t cols) {
  if (!(row_ok && k_ok)) return make_uint4(0, 0, 0, 0);
  if constexpr (!kFp8) {
    return __ldg(reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(weights) + row * cols + k));
  } else {
    const uint2 bytes = __ldg(reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(weights) + row * cols + k));
    return make_uint4(Fp8PairToHalfPair(bytes.x & 0xffffu), Fp8PairToHalfPair(bytes.x >> 16),
                      Fp8PairToHalfPair(bytes.y & 0xffffu), Fp8PairToHalfPair(bytes.y >> 16));
  }
}

__device__ __forceinline__ uint4 LoadActivations(const uint16_t* rows, int64_t row, bool row_ok, int64_t k,
                                                 bool k_ok, int64_t cols) {
  if (!(row_ok && k_ok)) return make_uint4(0, 0, 0, 0);
  return __ldg(reinterpret_cast<const uint4*>(rows + row * cols + k));
}

// One warp: 16 weight rows (row_a for fragment rows 0-7, row_b for 8-15) against up to
// kTilesPerPass * 8 activation rows starting at `first`, over its share of k: steps of 128
// starting at k_first, every kWarpsPerBlock-th step (the block's warps split k). A step lies in
// one 128-wide scale block, so FP8 weights go into the MMA unscaled (f16, exact) and each step's
// partial sums are scaled per row (scale_row_a / scale_row_b) when added to `acc`.
template <bool kFp8>
__device__ __forceinline__ void WarpProduct(const void* weights, const float* scale, int64_t cols,
                                            int64_t row_a, bool row_a_ok, int64_t scale_row_a, int64_t row_b,
                                            bool row_b_ok, int64_t scale_row_b, const uint16_t* x,
                                            int32_t first, int32_t end, int t, int g, int64_t k_first,
                                            float (&acc)[kTilesPerPass][4]) {
  const int64_t scale_cols = (cols + 127) / 128;
  const int tiles = min(kTilesPerPass, (end - first + 7) / 8);
  constexpr int64_t kStep = 32 * kChunksPerStep;
  for (int64_t k_step = k_first; k_step < cols; k_step += kStep * kWarpsPerBlock) {
    uint4 wa[kChunksPerStep], wb[kChunksPerStep];
#pragma unroll
    for (int c = 0; c < kChunksPerStep; ++c) {
      const int64_t k = k_step + c * 32 + t * 8;
      const bool k_ok = k < cols;
      wa[c] = LoadWeights<kFp8>(weights, row_a, row_a_ok, k, k_ok, cols);
      wb[c] = LoadWeights<kFp8>(weights, row_b, row_b_ok, k, k_ok, cols);
    }
    float part[kTilesPerPass][4];
#pragma unroll
    for (int tile = 0; tile < kTilesPerPass; ++tile) {
#pragma unroll
      for (int i = 0; i < 4; ++i) part[tile][i] = 0.0f;
    }
    float(&sink)[kTilesPerPass][4] = kFp8 ? part : acc;
#pragma unroll
    for (int c = 0; c < kChunksPerStep; ++c) {
      const int64_t k = k_step + c * 32 + t * 8;
      const bool k_ok = k < cols;
#pragma unroll
      for (int tile = 0; tile < kTilesPerPass; ++tile) {
        if (tile < tiles) {
          const int32_t row = first + tile * 8 + g;
          const uint4 xv = LoadActivations(x, row, row < end, k, k_ok, cols);
          Mma<kFp8>(sink[tile], wa[c].x, wb[c].x, wa[c].y, wb[c].y, xv.x, xv.y);
          Mma<kFp8>(sink[tile], wa[c].z, wb[c].z, wa[c].w, wb[c].w, xv.z, xv.w);
        }
      }
    }
    if constexpr (kFp8) {
      const float scale_a = row_a_ok ? __ldg(scale + scale_row_a * scale_cols + k_step / 128) : 0.0f;
      const float scale_b = row_b_ok ? __ldg(scale + scale_row_b * scale_cols + k_step / 128) : 0.0f;
#pragma unroll
      for (int tile = 0; tile < kTilesPerPass; ++tile) {
        acc[tile][0] += scale_a * part[tile][0];
        acc[tile][1] += scale_a * part[tile][1];
        acc[tile][2] += scale_b * part[tile][2];
        acc[tile][3] += scale_b * part[tile][3];
      }
    }
  }
}

// A float as 16 bits: f16 for the FP8 path (its MMA takes f16), else bf16.
template <bool kHalf>
__device__ __forceinline__ uint16_t To16(float value) {
  if constexpr (kHalf) {
    return __half_as_ushort(__float2half_rn(value));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(value));
  }
}

// Sums the block's per-warp partial accumulators into warp 0's `acc` (all threads must call it).
__device__ __forceinline__ void ReduceAcrossWarps(float (&acc)[kTilesPerPass][4], int warp, int lane) {
  __shared__ float partial[kWarpsPerBlock][kTilesPerPass * 4][32];
#pragma unroll
  for (int tile = 0; tile < kTilesPerPass; ++tile) {
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][tile * 4 + i][lane] = acc[tile][i];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int tile = 0; tile < kTilesPerPass; ++tile) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarpsPerBlock; ++w) sum += partial[w][tile * 4 + i][lane];
        acc[tile][i] = sum;
      }
    }
  }
  __syncthreads();  // `partial` is reused by the next pass
}

template <bool kFp8>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
ExpertGateUpKernel(const uint16_t* __restrict__ x, const int32_t* __restrict__ offsets,
                   const void* const* __restrict__ gate_up, const float* const* __restrict__ gate_up_scale,
                   int64_t hidden, int64_t intermediate, uint16_t* __restrict__ h) {
  const int32_t slot = blockIdx.y;
  const int32_t begin = offsets[slot], end = offsets[slot + 1];
  if (begin >= end) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t j0 = int64_t(blockIdx.x) * 8;  // one unit of 8 gate + 8 up rows per block
  const int g = lane / 4, t = lane % 4;
  const int64_t j = j0 + g;
  const bool j_ok = j < intermediate;
  const void* weights = gate_up[slot];
  const float* scale = kFp8 ? gate_up_scale[slot] : nullptr;
  const int64_t gate_scale_rows = (intermediate + 127) / 128;
  for (int32_t first = begin; first < end; first += kTilesPerPass * 8) {
    float acc[kTilesPerPass][4] = {};
    WarpProduct<kFp8>(weights, scale, hidden, j, j_ok, j / 128, intermediate + j, j_ok, gate_scale_rows + j / 128,
                      x, first, end, t, g, warp * 32 * kChunksPerStep, acc);
    ReduceAcrossWarps(acc, warp, lane);
    if (warp != 0) continue;
#pragma unroll
    for (int tile = 0; tile < kTilesPerPass; ++tile) {
      const int32_t row0 = first + tile * 8 + 2 * t;
      if (j_ok && row0 < end) h[int64_t(row0) * intermediate + j] = To16<kFp8>(Silu(acc[tile][0]) * acc[tile][2]);
      if (j_ok && row0 + 1 < end) {
        h[int64_t(row0 + 1) * intermediate + j] = To16<kFp8>(Silu(acc[tile][1]) * acc[tile][3]);
      }
    }
  }
}

template <bool kFp8>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
ExpertDownKernel(const uint16_t* __restrict__ h, const int32_t* __restrict__ offsets,
                 const void* const* __restrict__ down, const float* const* __restrict__ down_scale, int64_t hidden,
                 int64_t intermediate, float* __restrict__ y) {
  const int32_t slot = blockIdx.y;
  const int32_t begin = offsets[slot], end = offsets[slot + 1];
  if (begin >= end) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i0 = int64_t(blockIdx.x) * 16;  // one unit of 16 output rows per block
  const int g = lane / 4, t = lane % 4;
  const int64_t row_a = i0 + g, row_b = i0 + g + 8;
  const bool a_ok = row_a < hidden, b_ok = row_b < hidden;
  const void* weights = down[slot];
  const float* scale = kFp8 ? down_scale[slot] : nullptr;
  for (int32_t first = begin; first < end; first += kTilesPerPass * 8) {
    float acc[kTilesPerPass][4] = {};
    WarpProduct<kFp8>(weights, scale, intermediate, row_a, a_ok, row_a / 128, row_b, b_ok, row_b / 128, h, first,
                      end, t, g, warp * 32 * kChunksPerStep, acc);
    ReduceAcrossWarps(acc, warp, lane);
    if (warp != 0) continue;
#pragma unroll
    for (int tile = 0; tile < kTilesPerPass; ++tile) {
      const int32_t r0 = first + tile * 8 + 2 * t;
      if (r0 < end) {
        if (a_ok) y[int64_t(r0) * hidden + row_a] = acc[tile][0];
        if (b_ok) y[int64_t(r0) * hidden + row_b] = acc[tile][2];
      }
      if (r0 + 1 < end) {
        if (a_ok) y[int64_t(r0 + 1) * hidden + row_a] = acc[tile][1];
        if (b_ok) y[int64_t(r0 + 1) * hidden + row_b] = acc[tile][3];
      }
    }
  }
}

// ---- conversions ----------------------------------------------------------------------------

__global__ void DequantizeFp8BlockKernel(const uint8_t* __restrict__ fp8, const float* __restrict__ scale, int64_t rows,
                                         int64_t cols, int64_t split_rows, __nv_bfloat16* __restrict__ out) {
  const int64_t count = rows * cols;
  const int64_t scale_cols = (cols + 127) / 128;
  const int64_t first_blocks = (split_rows + 127) / 128;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    const int64_t block_row = r < split_rows ? r / 128 : first_blocks + (r - split_rows) / 128;
    const __half_raw raw = __nv_cvt_fp8_to_halfraw(fp8[i], __NV_E4M3);
    const float value = __half2float(*reinterpret_cast<const __half*>(&raw));
    out[i] = __float2bfloat16_rn(value * scale[block_row * scale_cols + c / 128]);
  }
}

__global__ void FloatToBFloat16Kernel(const float* __restrict__ in, __nv_bfloat16* __restrict__ out, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(in[i]);
  }
}

unsigned GridFor(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

absl::Status LaunchBuildExpertPermutation(const int32_t* expert_ids, int64_t num_slots, int64_t top_k,
                                          const int32_t* slot_of_expert, int64_t n_routed_experts,
                                          int64_t num_local, int32_t* offsets, int32_t* row_token,
                                          int32_t* row_of_slot, int32_t* error, void* stream) {
  if (num_local < 0 || num_local > kPermutationThreads || top_k <= 0 || num_slots < 0 ||
      num_slots > (int64_t(1) << 30)) {
    return absl::InvalidArgumentError("LaunchBuildExpertPermutation: at most 1024 local experts, top_k > 0");
  }
  BuildPermutationKernel<<<1, kPermutationThreads, 0, AsStream(stream)>>>(
      expert_ids, static_cast<int32_t>(num_slots), static_cast<int32_t>(top_k), slot_of_expert,
      static_cast<int32_t>(n_routed_experts), static_cast<int32_t>(num_local), offsets, row_token, row_of_slot,
      error);
  return LastLaunchStatus("BuildPermutationKernel");
}

absl::Status LaunchGatherRows(const float* x, const int32_t* row_token, const int32_t* offsets, int64_t num_local,
                              int64_t max_rows, int64_t hidden, void* rows_out, RowType type, void* stream) {
  if (hidden % 4 != 0) return absl::InvalidArgumentError("LaunchGatherRows: hidden must be a multiple of 4");
  if (max_rows <= 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>(max_rows < 4096 ? max_rows : 4096);
  GatherRowsKernel<<<blocks, 256, 0, AsStream(stream)>>>(x, row_token, offsets, static_cast<int32_t>(num_local),
                                                         hidden, rows_out, type);
  return LastLaunchStatus("GatherRowsKernel");
}

absl::Status LaunchExpertGateUp(const uint16_t* x_rows, const int32_t* offsets, int64_t num_local,
                                const void* const* gate_up, const float* const* gate_up_scale, bool fp8,
                                int64_t hidden, int64_t intermediate, uint16_t* h, void* stream) {
  if (hidden % 8 != 0 || intermediate % 8 != 0) {
    return absl::InvalidArgumentError("LaunchExpertGateUp: hidden and intermediate must be multiples of 8");
  }
  if (num_local <= 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>((intermediate + 7) / 8), static_cast<unsigned>(num_local));
  const uint16_t* x = x_rows;
  uint16_t* out = h;
  if (fp8) {
    ExpertGateUpKernel<true><<<grid, kWarpsPerBlock * 32, 0, AsStream(stream)>>>(x, offsets, gate_up, gate_up_scale,
                                                                                hidden, intermediate, out);
  } else {
    ExpertGateUpKernel<false><<<grid, kWarpsPerBlock * 32, 0, AsStream(stream)>>>(x, offsets, gate_up, gate_up_scale,
                                                                                 hidden, intermediate, out);
  }
  return LastLaunchStatus("ExpertGateUpKernel");
}

absl::Status LaunchExpertDown(const uint16_t* h, const int32_t* offsets, int64_t num_local, const void* const* down,
                              const float* const* down_scale, bool fp8, int64_t hidden, int64_t intermediate,
                              float* y, void* stream) {
  if (hidden % 8 != 0 || intermediate % 8 != 0) {
    return absl::InvalidArgumentError("LaunchExpertDown: hidden and intermediate must be multiples of 8");
  }
  if (num_local <= 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>((hidden + 15) / 16), static_cast<unsigned>(num_local));
  const uint16_t* in = h;
  if (fp8) {
    ExpertDownKernel<true><<<grid, kWarpsPerBlock * 32, 0, AsStream(stream)>>>(in, offsets, down, down_scale, hidden,
                                                                              intermediate, y);
  } else {
    ExpertDownKernel<false><<<grid, kWarpsPerBlock * 32, 0, AsStream(stream)>>>(in, offsets, down, down_scale, hidden,
                                                                               intermediate, y);
  }
  return LastLaunchStatus("ExpertDownKernel");
}

absl::Status LaunchSiluMultiplyRows(const float* gate_up, int64_t rows, int64_t intermediate, void* h, bool to_bf16,
                                    void* stream) {
  if (rows <= 0 || intermediate <= 0) return absl::OkStatus();
  SiluMultiplyRowsKernel<<<GridFor(rows * intermediate, 256), 256, 0, AsStream(stream)>>>(gate_up, rows, intermediate,
                                                                                         h, to_bf16);
  return LastLaunchStatus("SiluMultiplyRowsKernel");
}

absl::Status LaunchCombineExpertRows(const float* y, const int32_t* row_of_slot, const float* gate_weights,
                                     int64_t tokens, int64_t top_k, int64_t hidden, float* out, bool accumulate,
                                     void* stream) {
  if (hidden % 4 != 0) return absl::InvalidArgumentError("LaunchCombineExpertRows: hidden must be a multiple of 4");
  if (tokens <= 0) return absl::OkStatus();
  CombineRowsKernel<<<static_cast<unsigned>(tokens), 256, 0, AsStream(stream)>>>(
      y, row_of_slot, gate_weights, static_cast<int32_t>(top_k), hidden, out, accumulate);
  return LastLaunchStatus("CombineRowsKernel");
}

absl::Status LaunchDequantizeFp8Block(const uint8_t* fp8, const float* scale, int64_t rows, int64_t cols,
                                      int64_t split_rows, uint16_t* out, void* stream) {
  if (rows <= 0 || cols <= 0) return absl::OkStatus();
  DequantizeFp8BlockKernel<<<GridFor(rows * cols, 256), 256, 0, AsStream(stream)>>>(
      fp8, scale, rows, cols, split_rows, reinterpret_cast<__nv_bfloat16*>(out));
  return LastLaunchStatus("DequantizeFp8BlockKernel");
}

absl::Status LaunchFloatToBFloat16(const float* in, uint16_t* out, int64_t count, void* stream) {
  if (count <= 0) return absl::OkStatus();
  FloatToBFloat16Kernel<<<GridFor(count, 256), 256, 0, AsStream(stream)>>>(in, reinterpret_cast<__nv_bfloat16*>(out),
                                                                          count);
  return LastLaunchStatus("FloatToBFloat16Kernel");
}

}  // namespace expertmesh::cuda
