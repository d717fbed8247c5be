// Read-pattern probes (launcher in read_pattern_kernels.h): the few-token expert kernels' 16-byte
// streaming loads, four in flight per lane, and bulk copies into shared memory.
#include <cuda_runtime.h>

#include <cstdint>

#include "bench/gpu/read_pattern_kernels.h"
#include "engine/core/status_macros.h"
#include "engine/ops/cuda/cuda_status.h"
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

constexpr int kBulkStages = 4;
constexpr int kBulkChunk = 16 * 1024;

__device__ __forceinline__ uint32_t SharedAddress(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// One thread per block drives a ring of kBulkStages chunks: each lands in shared memory through a
// bulk copy that completes a transaction count on the stage's mbarrier.
__global__ void __launch_bounds__(32) BulkReadKernel(const uint8_t* base, int64_t bytes, float* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ __align__(8) uint64_t landed[kBulkStages];
  if (threadIdx.x != 0) return;
  for (int s = 0; s < kBulkStages; ++s) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(SharedAddress(&landed[s])));
  }
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  const int64_t chunks = (bytes + kBulkChunk - 1) / kBulkChunk;
  const auto issue = [&](int64_t i, int stage) {  // the block's i-th chunk into `stage`
    const int64_t chunk = blockIdx.x + i * gridDim.x;
    if (chunk >= chunks) return;
    const int64_t left = bytes - chunk * kBulkChunk;
    const uint32_t size = static_cast<uint32_t>(left < kBulkChunk ? left : kBulkChunk);
    const uint32_t barrier = SharedAddress(&landed[stage]);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(barrier), "r"(size) : "memory");
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
            SharedAddress(ring + stage * kBulkChunk)),
        "l"(base + chunk * kBulkChunk), "r"(size), "r"(barrier)
        : "memory");
  };
  for (int s = 0; s < kBulkStages; ++s) issue(s, s);
  uint32_t folded = 0;
  for (int64_t i = 0; blockIdx.x + i * gridDim.x < chunks; ++i) {
    const int stage = static_cast<int>(i % kBulkStages);
    const uint32_t parity = static_cast<uint32_t>(i / kBulkStages) & 1u;
    uint32_t done = 0;
    while (!done) {
      asm volatile(
          "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
          : "=r"(done)
          : "r"(SharedAddress(&landed[stage])), "r"(parity)
          : "memory");
    }
    folded ^= *reinterpret_cast<const uint32_t*>(ring + stage * kBulkChunk);
    // The generic-proxy read above happens before the next bulk copy (async proxy) overwrites it.
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    issue(i + kBulkStages, stage);
  }
  sink[blockIdx.x] = __uint_as_float(folded & 0x3fffffffu);
#endif
}

}  // namespace

absl::Status LaunchBulkRead(const void* base, int64_t bytes, int blocks_per_sm, float* sink, int sm_count,
                            void* stream) {
  if (bytes <= 0 || bytes % 16 != 0 || reinterpret_cast<uintptr_t>(base) % 16 != 0 || blocks_per_sm <= 0 ||
      sm_count <= 0) {
    return absl::InvalidArgumentError("LaunchBulkRead: 16-byte aligned whole 16-byte pieces, positive counts");
  }
  constexpr int kShared = kBulkStages * kBulkChunk;
  EXPERTMESH_RETURN_IF_ERROR(cuda::CudaStatus(
      cudaFuncSetAttribute(BulkReadKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kShared),
      "cudaFuncSetAttribute(BulkReadKernel)"));
  BulkReadKernel<<<blocks_per_sm * sm_count, 32, kShared, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint8_t*>(base), bytes, sink);
  return cuda::LastLaunchStatus("BulkReadKernel");
}

absl::Status LaunchReadPattern(const void* base, int64_t rows, int64_t row_bytes, bool whole_rows, float* sink,
                               int sm_count, void* stream) {
  if (row_bytes <= 0 || row_bytes % 16 != 0 || rows <= 0 || sm_count <= 0) {
    return absl::InvalidArgumentError("LaunchReadPattern: rows of whole 16-byte pieces, a positive count");
  }
  ReadPatternKernel<<<2 * sm_count, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint8_t*>(base), rows, row_bytes, whole_rows, sink);
  return cuda::LastLaunchStatus("ReadPatternKernel");
}

}  // namespace expertmesh::bench
