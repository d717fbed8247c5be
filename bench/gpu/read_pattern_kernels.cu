// Read-pattern probes (launcher in read_pattern_kernels.h): the few-token expert kernels' 16-byte
// streaming loads, four in flight per lane.
#include <cuda_runtime.h>

#include <cstdint>

#include "bench/gpu/read_pattern_kernels.h"
#include "engine/ops/cuda/few_token_dot.cuh"

namespace expertmesh::bench {
namespace {

using cuda::few_token::LoadStreaming;

constexpr int kThreads = 512;
constexpr int kLoads = 4;                        // per lane and step
constexpr int64_t kStepBytes = 32 * 16 * kLoads;  // per warp and step: 2 KB

__device__ __forceinline__ uint32_t ReadStep(const uint8_t* at, int64_t limit, int lane) {
  uint4 v[kLoads];
#pragma unroll
  for (int q = 0; q < kLoads; ++q) {
    const int64_t offset = int64_t(lane) * 16 + q * 512;
    v[q] = offset < limit ? LoadStreaming(reinterpret_cast<const uint4*>(at + offset)) : make_uint4(0, 0, 0, 0);
  }
  uint32_t folded = 0;
#pragma unroll
  for (int q = 0; q < kLoads; ++q) folded ^= v[q].x ^ v[q].y ^ v[q].z ^ v[q].w;
  return folded;
}

__global__ void __launch_bounds__(kThreads, 2)
    ReadPatternKernel(const uint8_t* base, int64_t rows, int64_t row_bytes, bool whole_rows, float* sink) {
  const int lane = threadIdx.x % 32;
  const int64_t warp = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
  uint32_t folded = 0;
  if (whole_rows) {
    for (int64_t row = warp; row < rows; row += warps) {
      const uint8_t* start = base + row * row_bytes;
      for (int64_t offset = 0; offset < row_bytes; offset += kStepBytes) {
        folded ^= ReadStep(start + offset, row_bytes - offset, lane);
      }
    }
  } else {
    const int64_t bytes = rows * row_bytes;
    for (int64_t offset = warp * kStepBytes; offset < bytes; offset += warps * kStepBytes) {
      folded ^= ReadStep(base + offset, bytes - offset, lane);
    }
  }
  for (int shift = 16; shift > 0; shift >>= 1) folded ^= __shfl_xor_sync(0xffffffffu, folded, shift);
  if (lane == 0) sink[warp] = __uint_as_float(folded & 0x3fffffffu);
}

}  // namespace

absl::Status LaunchReadPattern(const void* base, int64_t rows, int64_t row_bytes, bool whole_rows, float* sink,
                               int sm_count, void* stream) {
  if (row_bytes <= 0 || row_bytes % 16 != 0 || rows <= 0 || sm_count <= 0) {
    return absl::InvalidArgumentError("LaunchReadPattern: rows of whole 16-byte pieces, a positive count");
  }
  ReadPatternKernel<<<2 * sm_count, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint8_t*>(base), rows, row_bytes, whole_rows, sink);
  const cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? absl::OkStatus() : absl::InternalError(cudaGetErrorString(error));
}

}  // namespace expertmesh::bench
