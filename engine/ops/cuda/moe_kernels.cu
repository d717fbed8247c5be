// Routed-expert kernels: mma.sync SwiGLU halves (bf16 or on-the-fly dequantized FP8 block-scaled
// weights) and FP8 block dequantization. Launchers are declared in moe_kernels.h (the routing
// kernels, permutation to combine, are in moe_routing_kernels.cu).
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/moe_kernels.h"
#include "engine/ops/cuda/warp_mma.cuh"

namespace expertmesh::cuda {
namespace {

using namespace warp_mma;  // NOLINT: the shared MMA helpers

// ---- tensor-core expert kernels -------------------------------------------------------------
//
// A block of kWarpsPerBlock warps takes kWarpsPerBlock / split units (8 gate + 8 up rows, or 16
// down rows); the `split` warps of a unit divide its k range and are summed in shared memory.
// split = 8 (one unit per block, k over all warps) suits few units; smaller splits make fewer,
// longer-lived blocks when many experts have rows. With `active` (the list of local slots that
// have rows: active[0] = count, then the slots), blockIdx.y indexes that list, so a grid over
// min(local experts, token slots) launches no blocks for experts without rows.

__device__ __forceinline__ bool SlotOfBlock(const int32_t* active, int32_t* slot) {
  if (active == nullptr) {
    *slot = static_cast<int32_t>(blockIdx.y);
    return true;
  }
  if (static_cast<int32_t>(blockIdx.y) >= active[0]) return false;
  *slot = active[1 + blockIdx.y];
  return true;
}

template <bool kFp8, bool kRing>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, kMinBlocksPerSm)
ExpertGateUpKernel(const uint16_t* __restrict__ x, const int32_t* __restrict__ offsets,
                   const int32_t* __restrict__ active, const void* const* __restrict__ gate_up,
                   const float* const* __restrict__ gate_up_scale, int64_t hidden, int64_t intermediate, int split,
                   uint16_t* __restrict__ h) {
  int32_t slot = 0;
  if (!SlotOfBlock(active, &slot)) return;
  const int32_t begin = offsets[slot], end = offsets[slot + 1];
  if (begin >= end) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t unit = int64_t(blockIdx.x) * (kWarpsPerBlock / split) + warp / split;
  const int k_part = warp % split;
  const int g = lane / 4, t = lane % 4;
  const int64_t j = unit * 8 + g;  // 8 gate rows and the matching 8 up rows per unit
  const bool j_ok = j < intermediate;
  const void* weights = gate_up[slot];
  const float* scale = kFp8 ? gate_up_scale[slot] : nullptr;
  const int64_t gate_scale_rows = (intermediate + 127) / 128;
  extern __shared__ uint4 skinny_ring[];
  uint4* ring = WarpRing<kFp8, kRing>(skinny_ring, warp);
  for (int32_t first = begin; first < end; first += kTilesPerPass * 8) {
    float acc[kTilesPerPass][4] = {};
    WarpProduct<kFp8, kRing>(weights, scale, hidden, unit * 8, intermediate, j / 128, intermediate + unit * 8, 2 * intermediate,
                      gate_scale_rows + j / 128, x, first, end, t, g, int64_t(k_part) * kStep, int64_t(split) * kStep,
                      ring, acc);
    ReduceSplitK(acc, warp, lane, split);
    if (k_part != 0) continue;
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

template <bool kFp8, bool kRing>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, kMinBlocksPerSm)
ExpertDownKernel(const uint16_t* __restrict__ h, const int32_t* __restrict__ offsets, const int32_t* __restrict__ active,
                 const void* const* __restrict__ down, const float* const* __restrict__ down_scale, int64_t hidden,
                 int64_t intermediate, int split, float* __restrict__ y) {
  int32_t slot = 0;
  if (!SlotOfBlock(active, &slot)) return;
  const int32_t begin = offsets[slot], end = offsets[slot + 1];
  if (begin >= end) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t unit = int64_t(blockIdx.x) * (kWarpsPerBlock / split) + warp / split;
  const int k_part = warp % split;
  const int g = lane / 4, t = lane % 4;
  const int64_t row_a = unit * 16 + g, row_b = row_a + 8;  // 16 output rows per unit
  const bool a_ok = row_a < hidden, b_ok = row_b < hidden;
  const void* weights = down[slot];
  const float* scale = kFp8 ? down_scale[slot] : nullptr;
  extern __shared__ uint4 skinny_ring[];
  uint4* ring = WarpRing<kFp8, kRing>(skinny_ring, warp);
  for (int32_t first = begin; first < end; first += kTilesPerPass * 8) {
    float acc[kTilesPerPass][4] = {};
    WarpProduct<kFp8, kRing>(weights, scale, intermediate, unit * 16, hidden, row_a / 128, unit * 16 + 8, hidden, row_b / 128, h,
                      first, end, t, g, int64_t(k_part) * kStep, int64_t(split) * kStep, ring, acc);
    ReduceSplitK(acc, warp, lane, split);
    if (k_part != 0) continue;
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

// 16 values per thread (cols % 16 == 0: one 16-byte load, two 16-byte stores, one scale).
__global__ void DequantizeFp8BlockSixteensKernel(const uint8_t* __restrict__ fp8, const float* __restrict__ scale,
                                                 int64_t rows, int64_t cols, int64_t split_rows,
                                                 __nv_bfloat16* __restrict__ out) {
  const int64_t per_row = cols / 16, count = rows * per_row;
  const int64_t scale_cols = (cols + 127) / 128;
  const int64_t first_blocks = (split_rows + 127) / 128;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row, c = (i - r * per_row) * 16;
    const int64_t block_row = r < split_rows ? r / 128 : first_blocks + (r - split_rows) / 128;
    const float factor = scale[block_row * scale_cols + c / 128];
    const uint4 bytes = reinterpret_cast<const uint4*>(fp8)[i];
    const uint32_t words[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
    uint32_t packed[8];
#pragma unroll
    for (int w = 0; w < 4; ++w) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint32_t pair = half == 0 ? words[w] & 0xffffu : words[w] >> 16;
        const uint32_t halves = warp_mma::Fp8PairToHalfPair(pair);
        const float2 values = __half22float2(*reinterpret_cast<const __half2*>(&halves));
        __nv_bfloat162 result = __floats2bfloat162_rn(values.x * factor, values.y * factor);
        packed[2 * w + half] = *reinterpret_cast<uint32_t*>(&result);
      }
    }
    uint4* destination = reinterpret_cast<uint4*>(out) + 2 * i;
    destination[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    destination[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
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

absl::Status PrepareExpertKernels() {
  static PreparedPerDevice kernels([] {
    cudaError_t error = AllowRing(ExpertGateUpKernel<false, true>, kRingBytes<false>);
    if (error == cudaSuccess) error = AllowRing(ExpertGateUpKernel<true, true>, kRingBytes<true>);
    if (error == cudaSuccess) error = AllowRing(ExpertDownKernel<false, true>, kRingBytes<false>);
    if (error == cudaSuccess) error = AllowRing(ExpertDownKernel<true, true>, kRingBytes<true>);
    return error;
  });
  return CudaStatus(kernels.Ensure(), "expert kernel shared-memory attributes");
}

static absl::Status CheckExpertLaunch(const char* what, int64_t hidden, int64_t intermediate, const ExpertGrid& grid) {
  if (hidden % 8 != 0 || intermediate % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": hidden and intermediate must be multiples of 8"));
  }
  if (grid.split != 1 && grid.split != 2 && grid.split != 4 && grid.split != 8) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": split must be 1, 2, 4 or 8"));
  }
  if (grid.experts < 0 || grid.experts > 65535) return absl::InvalidArgumentError(absl::StrCat(what, ": bad grid"));
  return PrepareExpertKernels();
}

absl::Status LaunchExpertGateUp(const uint16_t* x_rows, const int32_t* offsets, const ExpertGrid& grid,
                                const void* const* gate_up, const float* const* gate_up_scale, bool fp8,
                                int64_t hidden, int64_t intermediate, uint16_t* h, void* stream) {
  EXPERTMESH_RETURN_IF_ERROR(CheckExpertLaunch("LaunchExpertGateUp", hidden, intermediate, grid));
  if (grid.experts == 0) return absl::OkStatus();
  const int64_t units = (intermediate + 7) / 8, units_per_block = kWarpsPerBlock / grid.split;
  const dim3 blocks(static_cast<unsigned>((units + units_per_block - 1) / units_per_block),
                    static_cast<unsigned>(grid.experts));
  const auto launch = [&](auto kernel, int ring_bytes) {
    kernel<<<blocks, kWarpsPerBlock * 32, ring_bytes, AsStream(stream)>>>(x_rows, offsets, grid.active, gate_up,
                                                                        gate_up_scale, hidden, intermediate, grid.split, h);
  };
  if (fp8) {
    grid.weight_ring ? launch(ExpertGateUpKernel<true, true>, kRingBytes<true>) : launch(ExpertGateUpKernel<true, false>, 0);
  } else {
    grid.weight_ring ? launch(ExpertGateUpKernel<false, true>, kRingBytes<false>)
                     : launch(ExpertGateUpKernel<false, false>, 0);
  }
  return LastLaunchStatus("ExpertGateUpKernel");
}

absl::Status LaunchExpertDown(const uint16_t* h, const int32_t* offsets, const ExpertGrid& grid,
                              const void* const* down, const float* const* down_scale, bool fp8, int64_t hidden,
                              int64_t intermediate, float* y, void* stream) {
  EXPERTMESH_RETURN_IF_ERROR(CheckExpertLaunch("LaunchExpertDown", hidden, intermediate, grid));
  if (grid.experts == 0) return absl::OkStatus();
  const int64_t units = (hidden + 15) / 16, units_per_block = kWarpsPerBlock / grid.split;
  const dim3 blocks(static_cast<unsigned>((units + units_per_block - 1) / units_per_block),
                    static_cast<unsigned>(grid.experts));
  const auto launch = [&](auto kernel, int ring_bytes) {
    kernel<<<blocks, kWarpsPerBlock * 32, ring_bytes, AsStream(stream)>>>(h, offsets, grid.active, down, down_scale,
                                                                        hidden, intermediate, grid.split, y);
  };
  if (fp8) {
    grid.weight_ring ? launch(ExpertDownKernel<true, true>, kRingBytes<true>) : launch(ExpertDownKernel<true, false>, 0);
  } else {
    grid.weight_ring ? launch(ExpertDownKernel<false, true>, kRingBytes<false>) : launch(ExpertDownKernel<false, false>, 0);
  }
  return LastLaunchStatus("ExpertDownKernel");
}

int ChooseSplitK(int64_t units, int64_t expected_experts, int64_t k, int64_t target_warps) {
  int split = 1;
  // Double the split while the grid stays within `target_warps` (one wave: no partial second
  // wave) and each warp keeps >= 2 steps of k.
  while (split < kWarpsPerBlock && units * std::max<int64_t>(expected_experts, 1) * split * 2 <= target_warps &&
         k >= int64_t(2 * split) * 2 * kStep) {
    split *= 2;
  }
  return split;
}

absl::Status LaunchDequantizeFp8Block(const uint8_t* fp8, const float* scale, int64_t rows, int64_t cols,
                                      int64_t split_rows, uint16_t* out, void* stream) {
  if (rows <= 0 || cols <= 0) return absl::OkStatus();
  const bool aligned = (reinterpret_cast<uintptr_t>(fp8) | reinterpret_cast<uintptr_t>(out)) % 16 == 0;
  if (cols % 16 == 0 && aligned) {
    DequantizeFp8BlockSixteensKernel<<<GridFor(rows * cols / 16, 256), 256, 0, AsStream(stream)>>>(
        fp8, scale, rows, cols, split_rows, reinterpret_cast<__nv_bfloat16*>(out));
    return LastLaunchStatus("DequantizeFp8BlockSixteensKernel");
  }
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
