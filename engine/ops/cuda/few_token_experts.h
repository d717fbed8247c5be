// Launcher for the few-token routed-expert kernels: the whole SwiGLU expert FFN of a batch of at
// most kFewTokenMaxTokens tokens in two launches, with no permutation, gather or combine kernel.
// Every block decodes the batch's few routing slots itself; warps stream weight rows (bf16, or FP8
// E4M3 with 128x128 block scales; a row per warp or per pair of warps) against the tokens' rows
// held in shared memory, and the down kernel folds the gate weights in, writing each output
// element once (deterministic).
// Plain C++ header: device pointers are typed as raw integers or void; `stream` is a cudaStream_t.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace expertmesh::cuda {

inline constexpr int64_t kFewTokenMaxTokens = 4;
inline constexpr int64_t kFewTokenMaxTopK = 16;

struct FewTokenExpertBatch {
  int64_t tokens = 0, top_k = 0, hidden = 0, intermediate = 0;
  const float* activations = nullptr;   // [tokens, hidden] float32
  const int32_t* expert_ids = nullptr;  // [tokens, top_k] global ids, -1 = empty slot
  const float* gate_weights = nullptr;  // [tokens, top_k]
  const int32_t* slot_of_expert = nullptr;  // [n_routed] local slot, -1 = not held
  int64_t n_routed = 0;
  // Per local slot: [2I, H] gate rows then up rows, and [H, I] down rows; FP8 adds float32 block
  // scales [2 * ceil(I/128), ceil(H/128)] and [ceil(H/128), ceil(I/128)].
  const void* const* gate_up = nullptr;
  const void* const* down = nullptr;
  const float* const* gate_up_scale = nullptr;
  const float* const* down_scale = nullptr;
  bool fp8 = false;
  // Scratch for the SwiGLU output, [tokens * top_k, intermediate] 16-bit (bf16; f16 for FP8).
  uint16_t* h = nullptr;
  float* output = nullptr;  // [tokens, hidden]: = or += sum_k gate_weight * expert(x)
  bool accumulate = false;
  int32_t* error = nullptr;  // set to 1 when an id is >= n_routed or names an expert not held
  // Warps of a block that share each output row (h element or output element), each reading half
  // of the row's weights: 1 or 2, or 0 for 2 where the rows are at most half the grid's warps (a
  // few experts leave the others idle otherwise). Results differ from 1 only in float summation
  // order.
  int32_t warps_per_row = 0;
  // Launch the down kernel as a programmatic dependent of the gate/up kernel (it decodes the
  // routing and prefetches its first weight rows into L2 while gate/up finishes).
  bool programmatic_launch = true;
};

// OK when the kernels take this shape: 1 <= tokens <= kFewTokenMaxTokens, top_k <=
// kFewTokenMaxTopK, 16-byte weight rows (hidden and intermediate multiples of 8 for bf16, 16 for
// FP8) and rows that fit in shared memory; FAILED_PRECONDITION with the reason otherwise.
absl::Status CheckFewTokenExperts(int64_t tokens, int64_t top_k, int64_t hidden, int64_t intermediate, bool fp8);

// Sets the kernels' shared-memory limits on the current device. The launcher calls it once per
// device; call it before the first launch on a device is captured into a CUDA graph.
absl::Status PrepareFewTokenExpertKernels();

// Enqueues the two kernels on `stream` (capturable: no host synchronisation, no allocation).
// `sm_count` sizes the persistent grids (one wave).
absl::Status LaunchFewTokenExperts(const FewTokenExpertBatch& batch, int sm_count, void* stream);

}  // namespace expertmesh::cuda
