// Device helpers shared by the skinny tensor-core kernels (routed experts, decode-time linear
// layers): mma.sync m16n8k16 with float32 accumulation, weights streamed through a per-warp
// cp.async ring in shared memory or loaded straight into registers (16-byte pieces; FP8 E4M3
// converted exactly to f16 in registers), activation loads from bf16/f16 rows or float32 rows
// (rounded to the MMA type on the fly), one warp's product of 16 weight rows with up to 32
// activation rows over its share of k, and the split-k reduction across a block's warps.
// Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>

namespace expertmesh::cuda::warp_mma {

constexpr int kWarpsPerBlock = 8;  // 256 threads; a block's warps share units and split k
constexpr int kTilesPerPass = 4;   // 4 tiles of 8 activation rows per pass over the weights
constexpr int kChunksPerStep = 4;  // 4 chunks of 32 k-values per step of one warp
constexpr int kStep = 32 * kChunksPerStep;  // k-values per step (= one FP8 scale block)
constexpr int kMinBlocksPerSm = 2;          // caps registers at 128 so two blocks share an SM

// mma.m16n8k16 with A = 16 weight rows x 16 k, B = 16 k x 8 activation rows. Each thread (group
// g = lane / 4, t = lane % 4) loads 8 consecutive k-values (16 bytes of bf16) of weight rows g and
// g + 8 and of activation row g at k0 + 8t. The dot product does not care which physical k sits
// in which fragment position as long as A and B agree, so those 8 values feed two k16 steps: step
// s takes values 4s..4s+3 as the fragment columns (2t, 2t+1, 2t+8, 2t+9).
template <bool kHalf>
__device__ __forceinline__ void Mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
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

// Two floats as one 16-bit pair of the MMA type (f16 for the FP8 path, else bf16); `lo` is the
// lower k.
template <bool kHalf>
__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  if constexpr (kHalf) {
    __half2 pair = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&pair);
  } else {
    __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&pair);
  }
}

// 8 activations of `row` at column k as four pairs of the MMA type: straight from 16-bit rows
// (already in that type), or rounded from float32 rows.
template <bool kHalf>
__device__ __forceinline__ uint4 LoadActivations(const uint16_t* rows, int64_t row, bool row_ok, int64_t k, bool k_ok,
                                                 int64_t cols) {
  if (!(row_ok && k_ok)) return make_uint4(0, 0, 0, 0);
  return __ldg(reinterpret_cast<const uint4*>(rows + row * cols + k));
}

template <bool kHalf>
__device__ __forceinline__ uint4 LoadActivations(const float* rows, int64_t row, bool row_ok, int64_t k, bool k_ok,
                                                 int64_t cols) {
  if (!(row_ok && k_ok)) return make_uint4(0, 0, 0, 0);
  const float4* source = reinterpret_cast<const float4*>(rows + row * cols + k);
  const float4 a = __ldg(source), b = __ldg(source + 1);
  return make_uint4(PackPair<kHalf>(a.x, a.y), PackPair<kHalf>(a.z, a.w), PackPair<kHalf>(b.x, b.y),
                    PackPair<kHalf>(b.z, b.w));
}

// Where chunk c (8 k-values) of thread t lies in a step. bf16: chunks of 32 k, thread t at 8t.
// FP8: pairs of chunks share one 16-byte load, so thread t holds 16 consecutive k-values at
// 64 * (c / 2) + 16t, chunk c taking the half c % 2. Weights and activations use the same map.
template <bool kFp8>
__device__ __forceinline__ int64_t ChunkOffset(int c, int t) {
  if constexpr (kFp8) {
    return (c / 2) * 64 + t * 16 + (c % 2) * 8;
  } else {
    return c * 32 + t * 8;
  }
}

// ---- cp.async weight pipeline ----------------------------------------------------------------
// Each warp streams its weights through a private ring of kStages steps in shared memory with
// cp.async (no registers held while the copies fly), so kStages - 1 steps of loads are in flight
// per warp instead of one. Lanes read pieces other lanes copied: each lane waits for its own copy
// groups, then the warp synchronises.
constexpr int kStages = 3;
template <bool kFp8>
constexpr int kSlots = kFp8 ? 4 : 8;  // 16-byte pieces per lane and step (16 rows of 128 k-values)
// Dynamic shared memory of one block's rings.
template <bool kFp8>
constexpr int kRingBytes = kWarpsPerBlock * kStages * kSlots<kFp8> * 32 * 16;

__device__ __forceinline__ void CpAsync16(uint4* shared, const void* global, int bytes) {  // bytes: 16, or 0 = zeros
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global), "r"(bytes));
}
__device__ __forceinline__ void CpAsync8(void* shared, const void* global, int bytes) {  // bytes: 8, or 0 = zeros
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(address), "l"(global), "r"(bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// One step's weights of the warp's 16 rows (rows base_a + 0..7, then base_b + 0..7; a row is
// valid below its limit) land row-contiguously in `stage`: each row's 128 k-values as 16-byte
// pieces (16 for bf16, 8 for FP8), so one cp.async instruction of the warp copies whole rows
// (512 contiguous bytes). Piece cp of row r is stored at r * pieces + (cp ^ 4 (r & 1)): the
// fragment reads of rows g and g + 1 then fall into different banks. Out of range: zeros.
template <bool kFp8>
__device__ __forceinline__ void IssueStep(uint4* stage, int lane, const void* weights, int64_t cols, int64_t base_a,
                                          int64_t limit_a, int64_t base_b, int64_t limit_b, int64_t k_step) {
  constexpr int kPiecesPerRow = kFp8 ? 8 : 16;
  const bool wide = !kFp8 || cols % 16 == 0;  // FP8 rows of 8 (mod 16) bytes: two 8-byte copies
#pragma unroll
  for (int p = 0; p < 16 * kPiecesPerRow / 32; ++p) {
    const int q = p * 32 + lane;
    const int r = q / kPiecesPerRow, cp = q % kPiecesPerRow;
    const int64_t row = r < 8 ? base_a + r : base_b + (r - 8);
    const bool row_ok = r < 8 ? row < limit_a : row < limit_b;
    uint4* destination = stage + r * kPiecesPerRow + (cp ^ ((r & 1) << 2));
    if constexpr (!kFp8) {
      const auto* w = static_cast<const __nv_bfloat16*>(weights);
      const int64_t k = k_step + cp * 8;
      const bool in = row_ok && k < cols;
      CpAsync16(destination, in ? w + row * cols + k : w, in ? 16 : 0);
    } else {
      const auto* w = static_cast<const uint8_t*>(weights);
      const int64_t k = k_step + cp * 16;
      const uint8_t* source = w + row * cols + k;
      if (wide) {
        const bool in = row_ok && k + 16 <= cols;
        CpAsync16(destination, in ? source : w, in ? 16 : 0);
      } else {
        const bool first = row_ok && k + 8 <= cols, second = row_ok && k + 16 <= cols;
        CpAsync8(destination, first ? source : w, first ? 8 : 0);
        CpAsync8(reinterpret_cast<uint8_t*>(destination) + 8, second ? source + 8 : w, second ? 8 : 0);
      }
    }
  }
}

// 16 E4M3 bytes as two groups of four f16 pairs (exact).
__device__ __forceinline__ void ExpandFp8(const uint4& bytes, uint4& low, uint4& high) {
  low = make_uint4(Fp8PairToHalfPair(bytes.x & 0xffffu), Fp8PairToHalfPair(bytes.x >> 16),
                   Fp8PairToHalfPair(bytes.y & 0xffffu), Fp8PairToHalfPair(bytes.y >> 16));
  high = make_uint4(Fp8PairToHalfPair(bytes.z & 0xffffu), Fp8PairToHalfPair(bytes.z >> 16),
                    Fp8PairToHalfPair(bytes.w & 0xffffu), Fp8PairToHalfPair(bytes.w >> 16));
}

// Lane (g, t)'s weight pairs of one step: chunk c of row g (a) and row 8 + g (b) is piece
// 4c + t (bf16), FP8 chunk pair p is piece 4p + t (16 values, two chunks).
template <bool kFp8>
__device__ __forceinline__ void ReadStep(const uint4* stage, int g, int t, uint4 (&wa)[kChunksPerStep],
                                         uint4 (&wb)[kChunksPerStep]) {
  constexpr int kPiecesPerRow = kFp8 ? 8 : 16;
  const int swizzle = (g & 1) << 2;  // rows g and 8 + g share their parity
  const uint4* row_a = stage + g * kPiecesPerRow;
  const uint4* row_b = stage + (8 + g) * kPiecesPerRow;
  if constexpr (!kFp8) {
#pragma unroll
    for (int c = 0; c < kChunksPerStep; ++c) {
      wa[c] = row_a[(4 * c + t) ^ swizzle];
      wb[c] = row_b[(4 * c + t) ^ swizzle];
    }
  } else {
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      ExpandFp8(row_a[(4 * p + t) ^ swizzle], wa[2 * p], wa[2 * p + 1]);
      ExpandFp8(row_b[(4 * p + t) ^ swizzle], wb[2 * p], wb[2 * p + 1]);
    }
  }
}

// One step's products of both weight-loading paths: the lane's weight pairs wa / wb (rows g and
// 8 + g, from ReadStep or register loads) against up to `tiles` tiles of activation rows
// [first, end), into `acc` (bf16), or scaled per row by the step's 128-wide FP8 scale block.
template <bool kFp8, typename Activation>
__device__ __forceinline__ void StepProducts(const uint4 (&wa)[kChunksPerStep], const uint4 (&wb)[kChunksPerStep],
                                             const float* scale, int64_t cols, int64_t scale_row_a, bool row_a_ok,
                                             int64_t scale_row_b, bool row_b_ok, const Activation* x, int32_t first,
                                             int32_t end, int tiles, int t, int g, int64_t k_step,
                                             float (&acc)[kTilesPerPass][4]) {
  const int64_t scale_cols = (cols + 127) / 128;
  float part[kTilesPerPass][4];
#pragma unroll
  for (int tile = 0; tile < kTilesPerPass; ++tile) {
#pragma unroll
    for (int j = 0; j < 4; ++j) part[tile][j] = 0.0f;
  }
  float(&sink)[kTilesPerPass][4] = kFp8 ? part : acc;
#pragma unroll
  for (int c = 0; c < kChunksPerStep; ++c) {
    const int64_t k = k_step + ChunkOffset<kFp8>(c, t);
    const bool k_ok = k < cols;
#pragma unroll
    for (int tile = 0; tile < kTilesPerPass; ++tile) {
      if (tile < tiles) {
        const int32_t row = first + tile * 8 + g;
        const uint4 xv = LoadActivations<kFp8>(x, row, row < end, k, k_ok, cols);
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

// One warp: 16 weight rows (row_a for fragment rows 0-7, row_b for 8-15) against up to
// kTilesPerPass * 8 activation rows [first, end) of x ([*, cols]), over the steps of kStep k-values
// at k_first, k_first + k_stride, ... (weights through the warp's cp.async `ring`,
// kStages * kSlots * 32 pieces of shared memory). A step lies in one 128-wide scale block, so FP8
// weights go into the MMA unscaled (f16, exact) and each step's partial sums are scaled per row
// (scale_row_a / scale_row_b of `scale`, [*, ceil(cols / 128)]) when added to `acc`.
// acc[tile][0..1] = row_a . x rows (first + tile*8 + 2t, +1); acc[tile][2..3] = row_b . same rows.
template <bool kFp8, typename Activation>
__device__ __forceinline__ void WarpProductRing(const void* weights, const float* scale, int64_t cols,
                                                int64_t base_a, int64_t limit_a, int64_t scale_row_a, int64_t base_b,
                                                int64_t limit_b, int64_t scale_row_b, const Activation* x,
                                                int32_t first, int32_t end, int t, int g, int64_t k_first,
                                                int64_t k_stride, uint4* ring, float (&acc)[kTilesPerPass][4]) {
  const int lane = g * 4 + t;
  const bool row_a_ok = base_a + g < limit_a, row_b_ok = base_b + g < limit_b;
  const int tiles = min(kTilesPerPass, (end - first + 7) / 8);
  constexpr int kStagePieces = kSlots<kFp8> * 32;
  const int64_t steps = k_first < cols ? (cols - k_first + k_stride - 1) / k_stride : 0;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    IssueStep<kFp8>(ring + s * kStagePieces, lane, weights, cols, base_a, limit_a, base_b, limit_b,
                    k_first + s * k_stride);
    CpAsyncCommit();
  }
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t k_step = k_first + i * k_stride;
    __syncwarp();  // every lane has read the slot refilled next (it served step i - 1)
    IssueStep<kFp8>(ring + ((i + kStages - 1) % kStages) * kStagePieces, lane, weights, cols, base_a, limit_a, base_b,
                    limit_b, k_step + (kStages - 1) * k_stride);
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();  // this lane's copies of step i have landed
    __syncwarp();                // and every other lane's
    uint4 wa[kChunksPerStep], wb[kChunksPerStep];
    ReadStep<kFp8>(ring + (i % kStages) * kStagePieces, g, t, wa, wb);
    StepProducts<kFp8>(wa, wb, scale, cols, scale_row_a, row_a_ok, scale_row_b, row_b_ok, x, first, end, tiles, t, g,
                       k_step, acc);
  }
  CpAsyncWait<0>();  // the trailing (zero-fill) groups, before the ring is used again
  __syncwarp();
}

// ---- register weight loads (no shared memory) --------------------------------------------------

// 8 bf16 weights of `row` at column k (zeros out of range).
__device__ __forceinline__ uint4 LoadBf16Eight(const void* weights, int64_t row, bool row_ok, int64_t k, int64_t cols) {
  if (!(row_ok && k < cols)) return make_uint4(0, 0, 0, 0);
  return __ldg(reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(weights) + row * cols + k));
}

// 16 E4M3 weights of `row` at k (k % 8 == 0, cols % 8 == 0) as two groups of four f16 pairs;
// zeros past the row's end or for rows out of range. One 16-byte load when rows are 16-byte
// multiples (the weights start 256-byte aligned), else two 8-byte loads.
__device__ __forceinline__ void LoadFp8Sixteen(const void* weights, int64_t row, bool row_ok, int64_t k, int64_t cols,
                                               uint4& low, uint4& high) {
  uint4 bytes = make_uint4(0, 0, 0, 0);
  const auto* source = static_cast<const uint8_t*>(weights) + row * cols + k;
  if (row_ok && cols % 16 == 0 && k + 16 <= cols) {
    bytes = __ldg(reinterpret_cast<const uint4*>(source));
  } else if (row_ok) {
    if (k + 8 <= cols) {
      const uint2 first = __ldg(reinterpret_cast<const uint2*>(source));
      bytes.x = first.x;
      bytes.y = first.y;
    }
    if (k + 16 <= cols) {
      const uint2 second = __ldg(reinterpret_cast<const uint2*>(source + 8));
      bytes.z = second.x;
      bytes.w = second.y;
    }
  }
  ExpandFp8(bytes, low, high);
}

// WarpProductRing's product with the weights loaded straight into registers: one step of loads
// in flight per warp and no shared memory (the phase-2 kernels; kept for side-by-side runs).
template <bool kFp8, typename Activation>
__device__ __forceinline__ void WarpProductRegisters(const void* weights, const float* scale, int64_t cols,
                                                     int64_t base_a, int64_t limit_a, int64_t scale_row_a,
                                                     int64_t base_b, int64_t limit_b, int64_t scale_row_b,
                                                     const Activation* x, int32_t first, int32_t end, int t, int g,
                                                     int64_t k_first, int64_t k_stride, float (&acc)[kTilesPerPass][4]) {
  const int64_t row_a = base_a + g, row_b = base_b + g;
  const bool row_a_ok = row_a < limit_a, row_b_ok = row_b < limit_b;
  const int tiles = min(kTilesPerPass, (end - first + 7) / 8);
  for (int64_t k_step = k_first; k_step < cols; k_step += k_stride) {
    uint4 wa[kChunksPerStep], wb[kChunksPerStep];
    if constexpr (kFp8) {
#pragma unroll
      for (int c = 0; c < kChunksPerStep; c += 2) {
        const int64_t k = k_step + ChunkOffset<kFp8>(c, t);
        LoadFp8Sixteen(weights, row_a, row_a_ok, k, cols, wa[c], wa[c + 1]);
        LoadFp8Sixteen(weights, row_b, row_b_ok, k, cols, wb[c], wb[c + 1]);
      }
    } else {
#pragma unroll
      for (int c = 0; c < kChunksPerStep; ++c) {
        const int64_t k = k_step + ChunkOffset<kFp8>(c, t);
        wa[c] = LoadBf16Eight(weights, row_a, row_a_ok, k, cols);
        wb[c] = LoadBf16Eight(weights, row_b, row_b_ok, k, cols);
      }
    }
    StepProducts<kFp8>(wa, wb, scale, cols, scale_row_a, row_a_ok, scale_row_b, row_b_ok, x, first, end, tiles, t, g,
                       k_step, acc);
  }
}

// The warp's product through the cp.async ring (kRing; `ring` = the warp's share of the block's
// kRingBytes<kFp8> of dynamic shared memory) or with register loads (`ring` unused).
template <bool kFp8, bool kRing, typename Activation>
__device__ __forceinline__ void WarpProduct(const void* weights, const float* scale, int64_t cols, int64_t base_a,
                                            int64_t limit_a, int64_t scale_row_a, int64_t base_b, int64_t limit_b,
                                            int64_t scale_row_b, const Activation* x, int32_t first, int32_t end, int t,
                                            int g, int64_t k_first, int64_t k_stride, uint4* ring,
                                            float (&acc)[kTilesPerPass][4]) {
  if constexpr (kRing) {
    WarpProductRing<kFp8>(weights, scale, cols, base_a, limit_a, scale_row_a, base_b, limit_b, scale_row_b, x, first,
                          end, t, g, k_first, k_stride, ring, acc);
  } else {
    WarpProductRegisters<kFp8>(weights, scale, cols, base_a, limit_a, scale_row_a, base_b, limit_b, scale_row_b, x,
                               first, end, t, g, k_first, k_stride, acc);
  }
}

// The warp's ring inside the block's dynamic shared memory (null without the ring).
template <bool kFp8, bool kRing>
__device__ __forceinline__ uint4* WarpRing(uint4* block_ring, int warp) {
  return kRing ? block_ring + warp * kStages * kSlots<kFp8> * 32 : nullptr;
}

// Split-k: the block's warps form groups of `split` consecutive warps sharing one unit; each
// group's first warp (warp % split == 0) gets the group's sum in `acc`. Every thread of the block
// must call it with the same `split` (it synchronises the block unless split == 1).
__device__ __forceinline__ void ReduceSplitK(float (&acc)[kTilesPerPass][4], int warp, int lane, int split) {
  if (split <= 1) return;
  __shared__ float partial[kWarpsPerBlock][kTilesPerPass * 4][32];
#pragma unroll
  for (int tile = 0; tile < kTilesPerPass; ++tile) {
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][tile * 4 + i][lane] = acc[tile][i];
  }
  __syncthreads();
  if (warp % split == 0) {
#pragma unroll
    for (int tile = 0; tile < kTilesPerPass; ++tile) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        // Unrolled (compile-time trip count), so the group's loads issue together.
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarpsPerBlock; ++w) {
          if (w < split) sum += partial[warp + w][tile * 4 + i][lane];
        }
        acc[tile][i] = sum;
      }
    }
  }
  __syncthreads();  // `partial` is reused by the next pass
}

// Lets `kernel` take `bytes` of dynamic shared memory (the rings; above the 48 KB default) and
// prefer the largest shared-memory carveout, so two blocks fit on an SM.
template <typename Kernel>
inline cudaError_t AllowRing(Kernel kernel, int bytes) {
  cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (error != cudaSuccess) return error;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
}

// Runs `prepare` (the AllowRing calls of a set of kernels) once per device: function attributes
// are per device, and a thread may switch devices. Thread-safe; a failure is retried next time.
class PreparedPerDevice {
 public:
  explicit PreparedPerDevice(cudaError_t (*prepare)()) : prepare_(prepare) {}
  cudaError_t Ensure() {
    int device = 0;
    if (cudaError_t error = cudaGetDevice(&device); error != cudaSuccess) return error;
    const uint64_t bit = device < 64 ? uint64_t(1) << device : 0;
    std::lock_guard<std::mutex> lock(mutex_);
    if (bit != 0 && (prepared_ & bit) != 0) return cudaSuccess;
    const cudaError_t error = prepare_();
    if (error == cudaSuccess) prepared_ |= bit;
    return error;
  }

 private:
  cudaError_t (*prepare_)();
  std::mutex mutex_;
  uint64_t prepared_ = 0;
};

__device__ __forceinline__ float Silu(float g) { return g / (1.0f + __expf(-g)); }

// A float as 16 bits: f16 for the FP8 path (its MMA takes f16), else bf16.
template <bool kHalf>
__device__ __forceinline__ uint16_t To16(float value) {
  if constexpr (kHalf) {
    return __half_as_ushort(__float2half_rn(value));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(value));
  }
}

}  // namespace expertmesh::cuda::warp_mma
