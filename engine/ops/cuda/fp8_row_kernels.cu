// Activation-side kernels of the W8A8 expert path (launchers in fp8_rows.h): one warp rounds one
// 128-value block of one padded row to E4M3 with its scale, four values per lane.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/fp8_rows.h"
#include "engine/ops/cuda/warp_mma.cuh"

namespace expertmesh::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kE4M3Max = 448.0f;

// Rounds four values of a 128-value block (this lane's) and writes them and, from lane 0, the
// block's scale at its block-major place.
__device__ __forceinline__ void QuantizeBlock(float4 v, int64_t p, int64_t block, int64_t blocks, int64_t features,
                                              const PaddedRow& row, const int32_t* padded_offsets, uint8_t* q,
                                              float* scales) {
  const int lane = threadIdx.x & 31;
  float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  const float inverse = amax > 0.0f ? kE4M3Max / amax : 0.0f;
  const __nv_fp8x2_storage_t low =
      __nv_cvt_float2_to_fp8x2(make_float2(v.x * inverse, v.y * inverse), __NV_SATFINITE, __NV_E4M3);
  const __nv_fp8x2_storage_t high =
      __nv_cvt_float2_to_fp8x2(make_float2(v.z * inverse, v.w * inverse), __NV_SATFINITE, __NV_E4M3);
  reinterpret_cast<uint32_t*>(q + p * features + block * 128)[lane] = uint32_t(low) | uint32_t(high) << 16;
  if (lane == 0) {
    const int64_t first = padded_offsets[row.expert], count = padded_offsets[row.expert + 1] - first;
    scales[first * blocks + block * count + (p - first)] = amax / kE4M3Max;
  }
}

__global__ void __launch_bounds__(kThreads) QuantizeExpertRowsKernel(const float* __restrict__ x,
                                                                     const int32_t* __restrict__ row_token,
                                                                     const PaddedRow* __restrict__ table,
                                                                     const int32_t* __restrict__ padded_offsets,
                                                                     int64_t padded_rows, int64_t features,
                                                                     uint8_t* __restrict__ q, float* __restrict__ scales) {
  const int64_t blocks = features / 128;
  const int64_t unit = (int64_t(blockIdx.x) * kThreads + threadIdx.x) / 32;
  if (unit >= padded_rows * blocks) return;  // whole warps leave together
  const int64_t p = unit / blocks, block = unit - p * blocks;
  const PaddedRow row = table[p];
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (row.source >= 0) {
    const int64_t token = row_token[row.source];
    v = reinterpret_cast<const float4*>(x + token * features + block * 128)[threadIdx.x & 31];
  }
  QuantizeBlock(v, p, block, blocks, features, row, padded_offsets, q, scales);
}

__global__ void __launch_bounds__(kThreads) QuantizeSwiGluKernel(const __nv_bfloat16* __restrict__ gate_up,
                                                                 const PaddedRow* __restrict__ table,
                                                                 const int32_t* __restrict__ padded_offsets,
                                                                 int64_t row_begin, int64_t rows, int64_t intermediate,
                                                                 uint8_t* __restrict__ q, float* __restrict__ scales) {
  const int64_t blocks = intermediate / 128;
  const int64_t unit = (int64_t(blockIdx.x) * kThreads + threadIdx.x) / 32;
  if (unit >= rows * blocks) return;
  const int64_t p = row_begin + unit / blocks, block = unit % blocks;
  const PaddedRow row = table[p];
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (row.source >= 0) {
    const int64_t j = block * 128 + (threadIdx.x & 31) * 4;
    const __nv_bfloat16* gate = gate_up + p * 2 * intermediate + j;
    const __nv_bfloat16* up = gate + intermediate;
    v = make_float4(warp_mma::Silu(__bfloat162float(gate[0])) * __bfloat162float(up[0]),
                    warp_mma::Silu(__bfloat162float(gate[1])) * __bfloat162float(up[1]),
                    warp_mma::Silu(__bfloat162float(gate[2])) * __bfloat162float(up[2]),
                    warp_mma::Silu(__bfloat162float(gate[3])) * __bfloat162float(up[3]));
  }
  QuantizeBlock(v, p, block, blocks, intermediate, row, padded_offsets, q, scales);
}

unsigned WarpGrid(int64_t warps) { return static_cast<unsigned>((warps * 32 + kThreads - 1) / kThreads); }

}  // namespace

absl::Status LaunchQuantizeExpertRows(const float* x, const int32_t* row_token, const PaddedRow* table,
                                      const int32_t* padded_offsets, int64_t padded_rows, int64_t features,
                                      uint8_t* q, float* scales, void* stream) {
  if (features <= 0 || features % 128 != 0) {
    return absl::InvalidArgumentError("LaunchQuantizeExpertRows: features must be a multiple of 128");
  }
  if (padded_rows <= 0) return absl::OkStatus();
  QuantizeExpertRowsKernel<<<WarpGrid(padded_rows * (features / 128)), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, row_token, table, padded_offsets, padded_rows, features, q, scales);
  return LastLaunchStatus("QuantizeExpertRowsKernel");
}

absl::Status LaunchQuantizeSwiGlu(const uint16_t* gate_up, const PaddedRow* table, const int32_t* padded_offsets,
                                  int64_t row_begin, int64_t rows, int64_t intermediate, uint8_t* q, float* scales,
                                  void* stream) {
  if (intermediate <= 0 || intermediate % 128 != 0 || row_begin < 0) {
    return absl::InvalidArgumentError("LaunchQuantizeSwiGlu: intermediate must be a multiple of 128");
  }
  if (rows <= 0) return absl::OkStatus();
  QuantizeSwiGluKernel<<<WarpGrid(rows * (intermediate / 128)), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const __nv_bfloat16*>(gate_up), table, padded_offsets, row_begin, rows, intermediate, q, scales);
  return LastLaunchStatus("QuantizeSwiGluKernel");
}

}  // namespace expertmesh::cuda
