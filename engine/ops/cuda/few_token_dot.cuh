// Device helpers of the few-token expert kernels (few_token_expert_kernels.cu): the dot product of
// one 16-byte weight piece (8 bf16 or 16 FP8 E4M3 weights) with the matching 16-bit activation
// values, and the two E4M3 decodes (the conversion instruction, or integer ops). Included by .cu
// files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace expertmesh::cuda::few_token {

__device__ __forceinline__ float Bf16Low(uint32_t pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float Bf16High(uint32_t pair) { return __uint_as_float(pair & 0xffff0000u); }

__device__ __forceinline__ float Bf16PairDot(uint32_t w, uint32_t x, float acc) {
  return fmaf(Bf16High(w), Bf16High(x), fmaf(Bf16Low(w), Bf16Low(x), acc));
}

// Integer decode of E4M3 (kIntegerDecode): two of the four codes in `four_fp8` (bytes `selector`
// picks) become an f16 pair worth exactly code * 2^-8 (sign stays, the 7 magnitude bits drop one
// place into f16's exponent and mantissa; subnormals map to f16 subnormals), with a byte permute,
// a shift and logic ops instead of the conversion instruction. The 2^8 goes into the block scale.
// NaN codes do not survive (they are rejected when weights are loaded).
__device__ __forceinline__ uint32_t ScaledHalfPair(uint32_t four_fp8, uint32_t selector) {
  const uint32_t spread = __byte_perm(four_fp8, 0u, selector);  // codes at bits 8-15 and 24-31
  return (spread & 0x80008000u) | ((spread >> 1) & 0x3f803f80u);
}

// Codes 0,1 (`high` false) or 2,3 of a word of four E4M3 codes as an f16 pair: exact values with
// the conversion instruction, or code * 2^-8 with the integer decode (ScaledHalfPair).
template <bool kIntegerDecode>
__device__ __forceinline__ uint32_t HalfPairOfCodes(uint32_t four_fp8, bool high) {
  if constexpr (kIntegerDecode) {
    return ScaledHalfPair(four_fp8, high ? 0x3424u : 0x1404u);  // bytes 2,3 or 0,1 to bits 8-15, 24-31
  } else {
    const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(
        static_cast<__nv_fp8x2_storage_t>(high ? four_fp8 >> 16 : four_fp8 & 0xffffu), __NV_E4M3);
    return uint32_t(raw.x) | uint32_t(raw.y) << 16;
  }
}

__device__ __forceinline__ float HalfPairDot(uint32_t w_pair, uint32_t x_pair, float acc) {
  __half2 w2, x2;
  *reinterpret_cast<uint32_t*>(&w2) = w_pair;
  *reinterpret_cast<uint32_t*>(&x2) = x_pair;
  const float2 w = __half22float2(w2), x = __half22float2(x2);
  return fmaf(w.y, x.y, fmaf(w.x, x.x, acc));
}

// What the integer decode's block scales are multiplied by.
template <bool kIntegerDecode>
constexpr float kDecodeScale = kIntegerDecode ? 256.0f : 1.0f;

// 8 bf16 weights (kFp8 = false) or 16 E4M3 weights (true) times the matching 16-bit values at
// `row` (16-byte aligned; shared memory, or global memory read through the non-coherent cache).
template <bool kFp8, bool kGlobal, bool kIntegerDecode>
__device__ __forceinline__ float DotPiece(const uint4& w, const uint16_t* row) {
  const auto* pieces = reinterpret_cast<const uint4*>(row);
  const uint4 x0 = kGlobal ? __ldg(pieces) : pieces[0];
  if constexpr (kFp8) {
    const uint4 x1 = kGlobal ? __ldg(pieces + 1) : pieces[1];
    float acc = HalfPairDot(HalfPairOfCodes<kIntegerDecode>(w.x, false), x0.x, 0.0f);
    acc = HalfPairDot(HalfPairOfCodes<kIntegerDecode>(w.x, true), x0.y, acc);
    acc = HalfPairDot(HalfPairOfCodes<kIntegerDecode>(w.y, false), x0.z, acc);
    acc = HalfPairDot(HalfPairOfCodes<kIntegerDecode>(w.y, true), x0.w, acc);
    acc = HalfPairDot(HalfPairOfCodes<kIntegerDecode>(w.z, false), x1.x, acc);
    acc = HalfPairDot(HalfPairOfCodes<kIntegerDecode>(w.z, true), x1.y, acc);
    acc = HalfPairDot(HalfPairOfCodes<kIntegerDecode>(w.w, false), x1.z, acc);
    return HalfPairDot(HalfPairOfCodes<kIntegerDecode>(w.w, true), x1.w, acc);
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
