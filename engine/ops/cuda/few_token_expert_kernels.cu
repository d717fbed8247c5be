// Few-token routed-expert kernels (launcher in few_token_experts.h). A decode batch of 1-4 tokens
// reads each chosen expert's weights once and does little arithmetic per byte, so these kernels
// are built for the memory system: no tensor cores, persistent one-wave grids, each warp (or pair
// of warps, where rows are few) streaming weight rows in 16-byte non-allocating loads against rows
// held in shared memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/few_token_dot.cuh"
#include "engine/ops/cuda/few_token_experts.h"
#include "engine/ops/cuda/few_token_routing.cuh"
#include "engine/ops/cuda/warp_mma.cuh"

namespace expertmesh::cuda {
namespace {

using few_token::DecodeRouting;
using few_token::DotPiece;
using few_token::kMaxTokens;
using few_token::kValuesPerPiece;
using few_token::kWeightBytes;
using few_token::LoadStreaming;
using few_token::Routing;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
// 16-byte weight loads in flight per lane (gate/up: per row, two rows), sized so two blocks of 512
// threads fit each multiprocessor without spilling: 64 warps' worth of loads in flight per SM.
template <bool kFp8>
constexpr int kGateUpUnroll = kFp8 ? 2 : 4;
constexpr int kDownUnroll = 4;
constexpr int kMaxDynamicShared = 200 * 1024;

__device__ __forceinline__ void PrefetchL2(const void* pointer) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(pointer));
}

__device__ __forceinline__ void WaitForPrimaryGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void AllowDependentGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ float WarpSum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// A row's weights split across the kGroupSize warps of a group (consecutive warps of one block):
// each reads a slice of the row's 16-byte pieces and leaves its partial sums in shared memory,
// where the group's first warp adds them in member order (deterministic). With fewer rows than
// warps, splitting keeps every warp streaming instead of leaving some idle.
template <int kGroupSize>
struct WarpGroup {
  int index, member;  // index: of the group within the block
  __device__ explicit WarpGroup(int warp) : index(warp / kGroupSize), member(warp % kGroupSize) {}
  static __device__ int Slice(int pieces) { return (pieces + kGroupSize - 1) / kGroupSize; }
  __device__ int Begin(int pieces) const { return member * Slice(pieces); }
  __device__ int End(int pieces) const { return min(pieces, (member + 1) * Slice(pieces)); }
  // Waits for the group's warps (a named barrier per group; 0 is __syncthreads').
  __device__ void Sync() const { asm volatile("bar.sync %0, %1;" ::"r"(1 + index), "r"(32 * kGroupSize) : "memory"); }
};

// The group size: `requested` (1 or 2), or with 0 two warps per row where that still gives each
// of `tasks` rows a group of a grid of `warps` warps.
__host__ __device__ __forceinline__ int GroupSize(int requested, int tasks, int warps) {
  if (requested != 0) return requested;
  return tasks * 2 <= warps ? 2 : 1;
}

// Partial sums of the group members, double-buffered by task round so one barrier per task
// suffices: a member writes buffer r % 2 only after the barrier of round r - 1, which the group's
// first warp passes only once it has read that buffer in round r - 2.
template <typename T>
using GroupPartials = T[2][kWarps][kMaxTokens];

// ---- gate/up: h[slot, j] = silu(x_t . gate_j) * (x_t . up_j) ------------------------------

template <bool kFp8, int kGroupSize>
__device__ __forceinline__ void GateUpRow(const FewTokenExpertBatch& batch, const Routing& routing, int entry,
                                          int j, const uint16_t* x_rows, int lane, const WarpGroup<kGroupSize>& group,
                                          float2 (&partials)[kWarps][kMaxTokens]) {
  const int hidden = static_cast<int>(batch.hidden), intermediate = static_cast<int>(batch.intermediate);
  const int local = routing.local[entry];
  const uint32_t tokens = routing.tokens[entry];
  const auto* weights = static_cast<const uint8_t*>(batch.gate_up[local]);
  const auto* gate_row = reinterpret_cast<const uint4*>(weights + int64_t(j) * hidden * kWeightBytes<kFp8>);
  const auto* up_row =
      reinterpret_cast<const uint4*>(weights + (int64_t(intermediate) + j) * hidden * kWeightBytes<kFp8>);
  const float* gate_scale = nullptr;
  const float* up_scale = nullptr;
  if constexpr (kFp8) {
    const int column_blocks = (hidden + 127) / 128;
    gate_scale = batch.gate_up_scale[local] + (j / 128) * column_blocks;
    up_scale = batch.gate_up_scale[local] + ((intermediate + 127) / 128 + j / 128) * column_blocks;
  }
  const int pieces = hidden / kValuesPerPiece<kFp8>;
  const int end = group.End(pieces);
  float gate_acc[kMaxTokens] = {}, up_acc[kMaxTokens] = {};
  for (int first = group.Begin(pieces) + lane; first < end; first += 32 * kGateUpUnroll<kFp8>) {
    uint4 gate[kGateUpUnroll<kFp8>], up[kGateUpUnroll<kFp8>];
#pragma unroll
    for (int q = 0; q < kGateUpUnroll<kFp8>; ++q) {
      const int piece = first + 32 * q;
      if (piece < end) {
        gate[q] = LoadStreaming(gate_row + piece);
        up[q] = LoadStreaming(up_row + piece);
      }
    }
#pragma unroll
    for (int q = 0; q < kGateUpUnroll<kFp8>; ++q) {
      const int piece = first + 32 * q;
      if (piece >= end) break;
      float gate_block_scale = 1.0f, up_block_scale = 1.0f;
      if constexpr (kFp8) {
        // 8 pieces of 16 per 128-wide block
        gate_block_scale = __ldg(gate_scale + piece / 8);
        up_block_scale = __ldg(up_scale + piece / 8);
      }
#pragma unroll
      for (int t = 0; t < kMaxTokens; ++t) {
        if (!(tokens >> t & 1u)) continue;
        const uint16_t* x = x_rows + t * hidden + piece * kValuesPerPiece<kFp8>;
        if constexpr (kFp8) {
          gate_acc[t] = fmaf(gate_block_scale, DotPiece<kFp8, false>(gate[q], x), gate_acc[t]);
          up_acc[t] = fmaf(up_block_scale, DotPiece<kFp8, false>(up[q], x), up_acc[t]);
        } else {
          gate_acc[t] += DotPiece<kFp8, false>(gate[q], x);
          up_acc[t] += DotPiece<kFp8, false>(up[q], x);
        }
      }
    }
  }
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int t = 0; t < kMaxTokens; ++t) {
    if (!(tokens >> t & 1u)) continue;
    const float gate_sum = WarpSum(gate_acc[t]), up_sum = WarpSum(up_acc[t]);
    if constexpr (kGroupSize == 1) {
      if (lane == 0) {
        const int64_t at = int64_t(routing.slot[entry][t]) * intermediate + j;
        batch.h[at] = warp_mma::To16<kFp8>(warp_mma::Silu(gate_sum) * up_sum);
      }
    } else if (lane == 0) {
      partials[warp][t] = make_float2(gate_sum, up_sum);
    }
  }
  if constexpr (kGroupSize > 1) {
    group.Sync();
    if (group.member != 0 || lane != 0) return;
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      if (!(tokens >> t & 1u)) continue;
      float2 sum = partials[warp][t];
#pragma unroll
      for (int m = 1; m < kGroupSize; ++m) {
        sum.x += partials[warp + m][t].x;
        sum.y += partials[warp + m][t].y;
      }
      const int64_t at = int64_t(routing.slot[entry][t]) * intermediate + j;
      batch.h[at] = warp_mma::To16<kFp8>(warp_mma::Silu(sum.x) * sum.y);
    }
  }
}

template <bool kFp8, int kGroupSize>
__device__ __forceinline__ void GateUpTasks(const FewTokenExpertBatch& batch, const Routing& routing,
                                            const uint16_t* x_rows, GroupPartials<float2>& partials) {
  const WarpGroup<kGroupSize> group(threadIdx.x / 32);
  const int lane = threadIdx.x % 32, intermediate = static_cast<int>(batch.intermediate);
  const int tasks = routing.count * intermediate, groups = gridDim.x * (kWarps / kGroupSize);
  // Consecutive tasks go to different blocks, so every multiprocessor streams every expert.
  int round = 0;
  for (int task = group.index * gridDim.x + blockIdx.x; task < tasks; task += groups, ++round) {
    const int entry = task / intermediate;
    GateUpRow<kFp8, kGroupSize>(batch, routing, entry, task - entry * intermediate, x_rows, lane, group,
                                partials[round & 1]);
  }
}

template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 2) FewTokenGateUpKernel(const FewTokenExpertBatch batch) {
  __shared__ Routing routing;
  extern __shared__ uint4 dynamic_shared[];
  auto* x_rows = reinterpret_cast<uint16_t*>(dynamic_shared);  // [tokens, hidden] in 16 bits
  if (threadIdx.x < 32) DecodeRouting(batch, routing, blockIdx.x == 0);
  // Stage the tokens' rows (float32 -> bf16, or f16 for FP8), four values per thread and step.
  const int quads = static_cast<int>(batch.tokens * batch.hidden / 4);
  const auto* x4 = reinterpret_cast<const float4*>(batch.activations);
  for (int i = threadIdx.x; i < quads; i += kThreads) {
    const float4 v = x4[i];
    const uint32_t low = uint32_t(warp_mma::To16<kFp8>(v.x)) | uint32_t(warp_mma::To16<kFp8>(v.y)) << 16;
    const uint32_t high = uint32_t(warp_mma::To16<kFp8>(v.z)) | uint32_t(warp_mma::To16<kFp8>(v.w)) << 16;
    reinterpret_cast<uint2*>(x_rows)[i] = make_uint2(low, high);
  }
  __syncthreads();
  AllowDependentGrid();
  __shared__ GroupPartials<float2> partials;
  // The row count depends on the routing, so the group size is picked here (the same in every
  // block); more sizes in one kernel cost the single-warp path registers (spills).
  if (GroupSize(batch.warps_per_row, routing.count * static_cast<int>(batch.intermediate), gridDim.x * kWarps) == 2) {
    GateUpTasks<kFp8, 2>(batch, routing, x_rows, partials);
  } else {
    GateUpTasks<kFp8, 1>(batch, routing, x_rows, partials);
  }
}

// ---- down + combine: out[t, i] (+)= sum over entries of weight * (h_row . down_i) ---------

template <bool kFp8, int kGroupSize>
__device__ __forceinline__ void DownRow(const FewTokenExpertBatch& batch, const Routing& routing, int i,
                                        const uint16_t* h_rows, int lane, const WarpGroup<kGroupSize>& group,
                                        float (&partials)[kWarps][kMaxTokens]) {
  const int hidden = static_cast<int>(batch.hidden), intermediate = static_cast<int>(batch.intermediate);
  const int pieces = intermediate / kValuesPerPiece<kFp8>;
  const int begin = group.Begin(pieces), end = group.End(pieces);
  float acc[kMaxTokens] = {};
  for (int entry = 0; entry < routing.count; ++entry) {
    const int local = routing.local[entry];
    const uint32_t tokens = routing.tokens[entry];
    const auto* row = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(batch.down[local]) +
                                                     int64_t(i) * intermediate * kWeightBytes<kFp8>);
    const float* scale = nullptr;
    if constexpr (kFp8) scale = batch.down_scale[local] + (i / 128) * ((intermediate + 127) / 128);
    float weight[kMaxTokens];
    int h_offset[kMaxTokens];  // of the token's h row (slots * intermediate < 2^31: checked at launch)
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      weight[t] = routing.weight[entry][t];
      h_offset[t] = max(routing.slot[entry][t], 0) * intermediate;
    }
    for (int first = begin + lane; first < end; first += 32 * kDownUnroll) {
      uint4 w[kDownUnroll];
#pragma unroll
      for (int q = 0; q < kDownUnroll; ++q) {
        if (first + 32 * q < end) w[q] = LoadStreaming(row + first + 32 * q);
      }
#pragma unroll
      for (int q = 0; q < kDownUnroll; ++q) {
        const int piece = first + 32 * q;
        if (piece >= end) break;
        const float block_scale = kFp8 ? __ldg(scale + piece / 8) : 1.0f;
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
          if (!(tokens >> t & 1u)) continue;
          const uint16_t* h = h_rows + h_offset[t] + piece * kValuesPerPiece<kFp8>;
          acc[t] = fmaf(weight[t] * block_scale, DotPiece<kFp8, true>(w[q], h), acc[t]);
        }
      }
    }
  }
  const int tokens = static_cast<int>(batch.tokens), warp = threadIdx.x / 32;
#pragma unroll
  for (int t = 0; t < kMaxTokens; ++t) {
    if (t >= tokens) break;
    const float sum = WarpSum(acc[t]);
    if (lane != t) continue;
    if constexpr (kGroupSize == 1) {
      float* out = batch.output + int64_t(t) * hidden + i;
      *out = batch.accumulate ? *out + sum : sum;
    } else {
      partials[warp][t] = sum;
    }
  }
  if constexpr (kGroupSize > 1) {
    group.Sync();
    if (group.member != 0 || lane >= tokens) return;
    float sum = partials[warp][lane];
#pragma unroll
    for (int m = 1; m < kGroupSize; ++m) sum += partials[warp + m][lane];
    float* out = batch.output + int64_t(lane) * hidden + i;
    *out = batch.accumulate ? *out + sum : sum;
  }
}

template <bool kFp8, int kGroupSize>
__device__ __forceinline__ void DownTasks(const FewTokenExpertBatch& batch, const Routing& routing,
                                          GroupPartials<float>& partials) {
  const WarpGroup<kGroupSize> group(threadIdx.x / 32);
  const int lane = threadIdx.x % 32;
  const int hidden = static_cast<int>(batch.hidden), intermediate = static_cast<int>(batch.intermediate);
  const int first_task = group.index * gridDim.x + blockIdx.x, groups = gridDim.x * (kWarps / kGroupSize);
  if (first_task < hidden) {  // warm L2 with the 128-byte lines of this warp's slice of its first rows
    const int64_t row_bytes = int64_t(intermediate) * kWeightBytes<kFp8>;
    const int pieces = intermediate / kValuesPerPiece<kFp8>;  // of 16 bytes
    const int64_t begin = int64_t(group.Begin(pieces)) * 16 / 128 * 128, end = int64_t(group.End(pieces)) * 16;
    for (int entry = 0; entry < routing.count; ++entry) {
      const auto* row = static_cast<const uint8_t*>(batch.down[routing.local[entry]]) + first_task * row_bytes;
      for (int64_t offset = begin + int64_t(lane) * 128; offset < end; offset += 32 * 128) PrefetchL2(row + offset);
    }
  }
  WaitForPrimaryGrid();  // h is written by the gate/up kernel
  // h rows are read through L1 (a few KB each, reused by every task of the block).
  int round = 0;
  for (int task = first_task; task < hidden; task += groups, ++round) {
    DownRow<kFp8, kGroupSize>(batch, routing, task, batch.h, lane, group, partials[round & 1]);
  }
}

// The row count (hidden) is known at launch, so the group size is a template parameter here.
template <bool kFp8, int kGroupSize>
__global__ void __launch_bounds__(kThreads, 2) FewTokenDownKernel(const FewTokenExpertBatch batch) {
  __shared__ Routing routing;
  __shared__ GroupPartials<float> partials;
  // The routing comes from before the gate/up kernel, so it can be read while that kernel finishes.
  if (threadIdx.x < 32) DecodeRouting(batch, routing, false);
  __syncthreads();
  DownTasks<kFp8, kGroupSize>(batch, routing, partials);
}

// ---- launch -------------------------------------------------------------------------------

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

int64_t GateUpShared(const FewTokenExpertBatch& b) { return b.tokens * b.hidden * 2; }

// Resident blocks per multiprocessor for a kernel and its dynamic shared memory on `device`
// (cached).
absl::StatusOr<int> BlocksPerMultiprocessor(int device, const void* kernel, int64_t shared_bytes) {
  static std::mutex mutex;
  static std::map<std::tuple<int, const void*, int64_t>, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({device, kernel, shared_bytes});
  if (it != cache.end()) return it->second;
  int blocks = 0;
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, static_cast<size_t>(shared_bytes)),
      "cudaOccupancyMaxActiveBlocksPerMultiprocessor"));
  if (blocks <= 0) return absl::FailedPreconditionError("few-token expert kernel cannot be resident");
  cache[{device, kernel, shared_bytes}] = blocks;
  return blocks;
}

}  // namespace

absl::Status CheckFewTokenExperts(int64_t tokens, int64_t top_k, int64_t hidden, int64_t intermediate, bool fp8) {
  const int64_t multiple = fp8 ? 16 : 8;
  if (tokens < 1 || tokens > kFewTokenMaxTokens || top_k < 1 || top_k > kFewTokenMaxTopK) {
    return absl::FailedPreconditionError(absl::StrCat("few-token expert kernels take 1-", kFewTokenMaxTokens,
                                                      " tokens and top_k <= ", kFewTokenMaxTopK, " (got ", tokens,
                                                      " tokens, top_k ", top_k, ")"));
  }
  if (hidden <= 0 || intermediate <= 0 || hidden % multiple != 0 || intermediate % multiple != 0) {
    return absl::FailedPreconditionError(absl::StrCat("few-token expert kernels need hidden and intermediate sizes in "
                                                      "multiples of ", multiple, " (got ", hidden, ", ", intermediate,
                                                      ")"));
  }
  if (hidden >= (int64_t(1) << 24) || intermediate >= (int64_t(1) << 24) ||
      tokens * hidden * 2 > kMaxDynamicShared) {
    return absl::FailedPreconditionError(absl::StrCat("few-token expert kernels: rows of ", tokens, " x ", hidden,
                                                      " do not fit in shared memory"));
  }
  return absl::OkStatus();
}

absl::Status PrepareFewTokenExpertKernels() {
  for (const void* kernel :
       {reinterpret_cast<const void*>(FewTokenGateUpKernel<false>),
        reinterpret_cast<const void*>(FewTokenGateUpKernel<true>)}) {
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxDynamicShared),
        "cudaFuncSetAttribute(few-token experts)"));
  }
  return absl::OkStatus();
}

namespace {

// The shared-memory limit is a per-device attribute of a kernel: set once on each device.
absl::Status PreparedOn(int device) {
  static std::mutex mutex;
  static std::map<int, absl::Status> prepared;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = prepared.find(device);
  if (it == prepared.end()) it = prepared.emplace(device, PrepareFewTokenExpertKernels()).first;
  return it->second;
}

template <bool kFp8>
absl::Status LaunchKernels(const FewTokenExpertBatch& batch, int device, int sm_count, void* stream) {
  const auto* gate_up = reinterpret_cast<const void*>(FewTokenGateUpKernel<kFp8>);
  EXPERTMESH_ASSIGN_OR_RETURN(const int gate_up_blocks, BlocksPerMultiprocessor(device, gate_up, GateUpShared(batch)));
  void (*down)(FewTokenExpertBatch) = FewTokenDownKernel<kFp8, 1>;
  EXPERTMESH_ASSIGN_OR_RETURN(int down_blocks, BlocksPerMultiprocessor(device, reinterpret_cast<const void*>(down), 0));
  if (GroupSize(batch.warps_per_row, static_cast<int>(batch.hidden), down_blocks * sm_count * kWarps) == 2) {
    down = FewTokenDownKernel<kFp8, 2>;
    EXPERTMESH_ASSIGN_OR_RETURN(down_blocks,
                                BlocksPerMultiprocessor(device, reinterpret_cast<const void*>(down), 0));
  }
  // One wave: every block resident at once (the down kernel may start while gate/up finishes).
  FewTokenGateUpKernel<kFp8>
      <<<gate_up_blocks * sm_count, kThreads, GateUpShared(batch), AsStream(stream)>>>(batch);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), "FewTokenGateUpKernel"));
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(down_blocks * sm_count));
  config.blockDim = dim3(kThreads);
  config.stream = AsStream(stream);
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = batch.programmatic_launch ? 1 : 0;
  return CudaStatus(cudaLaunchKernelEx(&config, down, batch), "FewTokenDownKernel");
}

}  // namespace

absl::Status LaunchFewTokenExperts(const FewTokenExpertBatch& batch, int sm_count, void* stream) {
  EXPERTMESH_RETURN_IF_ERROR(
      CheckFewTokenExperts(batch.tokens, batch.top_k, batch.hidden, batch.intermediate, batch.fp8));
  if (reinterpret_cast<uintptr_t>(batch.activations) % 16 != 0 || reinterpret_cast<uintptr_t>(batch.h) % 16 != 0) {
    return absl::FailedPreconditionError("few-token expert kernels need 16-byte aligned activations and scratch");
  }
  if (batch.n_routed <= 0 || batch.n_routed >= (int64_t(1) << 31) || sm_count <= 0) {
    return absl::InvalidArgumentError("LaunchFewTokenExperts: bad expert count or multiprocessor count");
  }
  if (batch.warps_per_row < 0 || batch.warps_per_row > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchFewTokenExperts: warps_per_row must be 0 (auto), 1 or 2, not ", batch.warps_per_row));
  }
  int device = 0;
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaGetDevice(&device), "cudaGetDevice"));
  EXPERTMESH_RETURN_IF_ERROR(PreparedOn(device));
  return batch.fp8 ? LaunchKernels<true>(batch, device, sm_count, stream)
                   : LaunchKernels<false>(batch, device, sm_count, stream);
}

}  // namespace expertmesh::cuda
