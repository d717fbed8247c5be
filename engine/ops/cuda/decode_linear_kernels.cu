// Decode-time linear layers on the skinny tensor-core kernels (see decode_linear.h): one unit is
// 16 output rows (Linear) or 8 gate + 8 up rows (SwiGLU); a block's warps take 8 / split units.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/decode_linear.h"
#include "engine/ops/cuda/warp_mma.cuh"

namespace expertmesh::cuda {
namespace {

using namespace warp_mma;  // NOLINT: the shared MMA helpers

template <bool kRing>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, kMinBlocksPerSm)
DecodeLinearKernel(const float* __restrict__ x, int32_t rows, int64_t k, const uint16_t* __restrict__ weight, int64_t n,
                   int split, bool accumulate, float* __restrict__ y) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t unit = int64_t(blockIdx.x) * (kWarpsPerBlock / split) + warp / split;
  const int k_part = warp % split;
  const int g = lane / 4, t = lane % 4;
  const int64_t row_a = unit * 16 + g, row_b = row_a + 8;
  const bool a_ok = row_a < n, b_ok = row_b < n;
  extern __shared__ uint4 skinny_ring[];
  uint4* ring = WarpRing<false, kRing>(skinny_ring, warp);
  for (int32_t first = 0; first < rows; first += kTilesPerPass * 8) {
    float acc[kTilesPerPass][4] = {};
    WarpProduct<false, kRing>(weight, nullptr, k, unit * 16, n, 0, unit * 16 + 8, n, 0, x, first, rows, t, g,
                              int64_t(k_part) * kStep, int64_t(split) * kStep, ring, acc);
    ReduceSplitK(acc, warp, lane, split);
    if (k_part != 0) continue;
#pragma unroll
    for (int tile = 0; tile < kTilesPerPass; ++tile) {
      const int32_t r0 = first + tile * 8 + 2 * t;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int32_t r = r0 + half;
        if (r >= rows) continue;
        if (a_ok) {
          float* out = y + int64_t(r) * n + row_a;
          *out = accumulate ? *out + acc[tile][half] : acc[tile][half];
        }
        if (b_ok) {
          float* out = y + int64_t(r) * n + row_b;
          *out = accumulate ? *out + acc[tile][2 + half] : acc[tile][2 + half];
        }
      }
    }
  }
}

template <bool kRing>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, kMinBlocksPerSm)
DecodeSwiGluKernel(const float* __restrict__ x, int32_t rows, int64_t k, const uint16_t* __restrict__ gate_up,
                   int64_t intermediate, int split, float* __restrict__ h) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t unit = int64_t(blockIdx.x) * (kWarpsPerBlock / split) + warp / split;
  const int k_part = warp % split;
  const int g = lane / 4, t = lane % 4;
  const int64_t j = unit * 8 + g;
  const bool j_ok = j < intermediate;
  extern __shared__ uint4 skinny_ring[];
  uint4* ring = WarpRing<false, kRing>(skinny_ring, warp);
  for (int32_t first = 0; first < rows; first += kTilesPerPass * 8) {
    float acc[kTilesPerPass][4] = {};
    WarpProduct<false, kRing>(gate_up, nullptr, k, unit * 8, intermediate, 0, intermediate + unit * 8,
                              2 * intermediate, 0, x, first, rows, t, g, int64_t(k_part) * kStep,
                              int64_t(split) * kStep, ring, acc);
    ReduceSplitK(acc, warp, lane, split);
    if (k_part != 0) continue;
#pragma unroll
    for (int tile = 0; tile < kTilesPerPass; ++tile) {
      const int32_t r0 = first + tile * 8 + 2 * t;
      if (j_ok && r0 < rows) h[int64_t(r0) * intermediate + j] = Silu(acc[tile][0]) * acc[tile][2];
      if (j_ok && r0 + 1 < rows) h[int64_t(r0 + 1) * intermediate + j] = Silu(acc[tile][1]) * acc[tile][3];
    }
  }
}

// Within about 16 warps per SM in all (one wave), >= 2 steps of k per warp.
int SplitFor(int64_t units, int64_t k) {
  static int sm_count = [] {
    int device = 0, count = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0) {
      return 132;
    }
    return count;
  }();
  const int64_t target = int64_t(sm_count) * 16;
  int split = 1;
  while (split < kWarpsPerBlock && units * split * 2 <= target && k >= int64_t(2 * split) * 2 * kStep) split *= 2;
  return split;
}

absl::Status CheckShape(const char* what, int64_t rows, int64_t k, int64_t n) {
  if (rows < 0 || rows > kDecodeLinearMaxRows || k <= 0 || k % 8 != 0 || n <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": needs rows <= ", kDecodeLinearMaxRows,
                                                   ", K a positive multiple of 8 (got rows ", rows, ", K ", k, ", N ",
                                                   n, ")"));
  }
  return absl::OkStatus();
}

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

absl::Status PrepareDecodeLinearKernels() {
  static PreparedPerDevice kernels([] {
    cudaError_t error = AllowRing(DecodeLinearKernel<true>, kRingBytes<false>);
    if (error == cudaSuccess) error = AllowRing(DecodeSwiGluKernel<true>, kRingBytes<false>);
    return error;
  });
  return CudaStatus(kernels.Ensure(), "decode linear kernel shared-memory attributes");
}

absl::Status LaunchDecodeLinear(const float* x, int64_t rows, int64_t k, const uint16_t* weight, int64_t n, float* y,
                                bool accumulate, void* stream, bool weight_ring) {
  if (absl::Status status = CheckShape("LaunchDecodeLinear", rows, k, n); !status.ok()) return status;
  if (absl::Status status = PrepareDecodeLinearKernels(); !status.ok()) return status;
  if (rows == 0) return absl::OkStatus();
  const int64_t units = (n + 15) / 16;
  const int split = SplitFor(units, k);
  const int64_t units_per_block = kWarpsPerBlock / split;
  const auto blocks = static_cast<unsigned>((units + units_per_block - 1) / units_per_block);
  const auto launch = [&](auto kernel, int ring_bytes) {
    kernel<<<blocks, kWarpsPerBlock * 32, ring_bytes, AsStream(stream)>>>(x, static_cast<int32_t>(rows), k, weight, n,
                                                                        split, accumulate, y);
  };
  weight_ring ? launch(DecodeLinearKernel<true>, kRingBytes<false>) : launch(DecodeLinearKernel<false>, 0);
  return LastLaunchStatus("DecodeLinearKernel");
}

absl::Status LaunchDecodeSwiGlu(const float* x, int64_t rows, int64_t k, const uint16_t* gate_up,
                                int64_t intermediate, float* h, void* stream, bool weight_ring) {
  if (absl::Status status = CheckShape("LaunchDecodeSwiGlu", rows, k, intermediate); !status.ok()) return status;
  if (absl::Status status = PrepareDecodeLinearKernels(); !status.ok()) return status;
  if (rows == 0) return absl::OkStatus();
  const int64_t units = (intermediate + 7) / 8;
  const int split = SplitFor(units, k);
  const int64_t units_per_block = kWarpsPerBlock / split;
  const auto blocks = static_cast<unsigned>((units + units_per_block - 1) / units_per_block);
  const auto launch = [&](auto kernel, int ring_bytes) {
    kernel<<<blocks, kWarpsPerBlock * 32, ring_bytes, AsStream(stream)>>>(x, static_cast<int32_t>(rows), k, gate_up,
                                                                        intermediate, split, h);
  };
  weight_ring ? launch(DecodeSwiGluKernel<true>, kRingBytes<false>) : launch(DecodeSwiGluKernel<false>, 0);
  return LastLaunchStatus("DecodeSwiGluKernel");
}

}  // namespace expertmesh::cuda
