// Device helpers of the few-token expert kernels (few_token_expert_kernels.cu): the streaming
// 16-byte weight load (also the bench's read probe's, bench/gpu/read_pattern_kernels.cu) and the
// dot product of one 16-byte weight piece (8 bf16 or 16 FP8 E4M3 weights) with the matching 16-bit
// activation values. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace expertmesh::cuda::few_token {

// A 16-byte weight load that skips L1 (every weight is read once) and asks L2 for 256 bytes.
__device__ __forceinline__ uint4 LoadStreaming(const uint4* pointer) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(pointer));
  return v;
}

__device__ __forceinline__ float Bf16Low(uint32_t pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float Bf16High(uint32_t pair) { return __uint_as_float(pair & 0xffff0000u); }

__device__ __forceinline__ float Bf16PairDot(uint32_t w, uint32_t x, float acc) {
  return fmaf(Bf16High(w), Bf16High(x), fmaf(Bf16Low(w), Bf16Low(x), acc));
}

// Codes 0,1 (`high` false) or 2,3 of a word of four E4M3 codes as an f16 pair (exact values, by
// the conversion instruction; an integer decode measured slower, bench/RESULTS.md run 8).
__device__ __forceinline__ uint32_t HalfPairOfCodes(uint32_t four_fp8, bool high) {
  const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(
      static_cast<__nv_fp8x2_storage_t>(high ? four_fp8 >> 16 : four_fp8 & 0xffffu), __NV_E4M3);
  return uint32_t(raw.x) | uint32_t(raw.y) << 16;
}

__device__ __forceinline__ float HalfPairDot(uint32_t w_pair, uint32_t x_pair, float acc) {
  __half2 w2, x2;
  *reinterpret_cast<uint32_t*>(&w2) = w_pair;
  *reinterpret_cast<uint32_t*>(&x2) = x_pair;
  const float2 w = __half22float2(w2), x = __half22float2(x2);
  return fmaf(w.y, x.y, fmaf(w.x, x.x, acc));
}

// 8 bf16 weights (kFp8 = false) or 16 E4M3 weights (true) times the matching 16-bit values at
// `row` (16-byte aligned; shared memory, or global memory read through the non-coherent cache).
template <bool kFp8, bool kGlobal>
__device__ __forceinline__ float DotPiece(const uint4& w, const uint16_t* row) {
  const auto* pieces = reinterpret_cast<const uint4*>(row);
  const uint4 x0 = kGlobal ? __ldg(pieces) : pieces[0];
  if constexpr (kFp8) {
    const uint4 x1 = kGlobal ? __ldg(pieces + 1) : pieces[1];
    float acc = HalfPairDot(HalfPairOfCodes(w.x, false), x0.x, 0.0f);
    acc = HalfPairDot(HalfPairOfCodes(w.x, true), x0.y, acc);
    acc = HalfPairDot(HalfPairOfCodes(w.y, false), x0.z, acc);
    acc = HalfPairDot(HalfPairOfCodes(w.y, true), x0.w, acc);
    acc = HalfPairDot(HalfPairOfCodes(w.z, false), x1.x, acc);
    acc = HalfPairDot(HalfPairOfCodes(w.z, true), x1.y, acc);
    acc = HalfPairDot(HalfPairOfCodes(w.w, false), x1.z, acc);
    return HalfPairDot(HalfPairOfCodes(w.w, true), x1.w, acc);
  } else {
    float acc = Bf16PairDot(w.x, x0.x, 0.0f);
    acc = Bf16PairDot(w.y, x0.y, acc);
    acc = Bf16PairDot(w.z, x0.z, acc);
    return Bf16PairDot(w.w, x0.w, acc);
  }
}

template <bool kFp8>
constexpr int kValuesPerPiece = kFp8 ? 16 : 8;
template <bool kFp8>
constexpr int kWeightBytes = kFp8 ? 1 : 2;

}  // namespace expertmesh::cuda::few_token
