// The choosing kernels of the GPU model (see model_kernels.h): the MoE gate (sigmoid/softmax
// scores, correction bias for selection only, group-limited top-k, normalisation and scaling),
// row argmax, and the greedy step that writes the next token into the decode state.
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/model_kernels.h"

namespace expertmesh::cuda {
namespace {

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

// ---- MoE gate ---------------------------------------------------------------------------------

constexpr int kGateWarps = 4;
constexpr int kMaxGateExperts = 256;
constexpr int kMaxTopK = 16;

// RouteTokens' total order: larger first, NaN last, lower index first.
__device__ __forceinline__ bool Better(float a, int ia, float b, int ib) {
  const bool a_nan = isnan(a), b_nan = isnan(b);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a != b) return a > b;
  return ia < ib;
}

__global__ void __launch_bounds__(kGateWarps * 32)
MoeGateKernel(const float* __restrict__ logits, const float* __restrict__ bias, GateConfig gate, int64_t tokens,
              int32_t* __restrict__ ids, float* __restrict__ weights) {
  __shared__ float scores_all[kGateWarps][kMaxGateExperts];
  __shared__ float choice_all[kGateWarps][kMaxGateExperts];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t token = int64_t(blockIdx.x) * kGateWarps + warp;
  if (token >= tokens) return;  // whole warps only; no block barriers below
  float* scores = scores_all[warp];
  float* choice = choice_all[warp];
  const int experts = static_cast<int>(gate.experts);
  const float* row = logits + token * experts;
  if (gate.sigmoid) {
    for (int e = lane; e < experts; e += 32) scores[e] = 1.0f / (1.0f + expf(-row[e]));
  } else {
    float largest = -INFINITY;
    for (int e = lane; e < experts; e += 32) largest = fmaxf(largest, row[e]);
    for (int offset = 16; offset > 0; offset /= 2) largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
    double total = 0.0;
    for (int e = lane; e < experts; e += 32) {
      const float v = expf(row[e] - largest);
      scores[e] = v;
      total += v;
    }
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_xor_sync(0xffffffffu, total, offset);
    const float inverse = static_cast<float>(1.0 / total);
    for (int e = lane; e < experts; e += 32) scores[e] *= inverse;
  }
  const bool uses_bias = gate.method == 2 && bias != nullptr;
  for (int e = lane; e < experts; e += 32) choice[e] = scores[e] + (uses_bias ? bias[e] : 0.0f);
  __syncwarp();
  const bool group_limited = gate.method != 0 && gate.groups > 1;
  if (group_limited && lane == 0) {
    const int groups = static_cast<int>(gate.groups);
    const int per_group = experts / groups;
    float group_score[kMaxGateExperts];
    for (int g = 0; g < groups; ++g) {
      const float* members = choice + g * per_group;
      int best = 0;
      for (int i = 1; i < per_group; ++i) {
        if (Better(members[i], i, members[best], best)) best = i;
      }
      if (gate.method == 2) {
        int second = -1;
        for (int i = 0; i < per_group; ++i) {
          if (i != best && (second < 0 || Better(members[i], i, members[second], second))) second = i;
        }
        group_score[g] = members[best] + (second >= 0 ? members[second] : 0.0f);
      } else {
        group_score[g] = members[best];
      }
    }
    bool kept[kMaxGateExperts] = {};
    for (int k = 0; k < gate.topk_group && k < groups; ++k) {
      int best = -1;
      for (int g = 0; g < groups; ++g) {
        if (!kept[g] && (best < 0 || Better(group_score[g], g, group_score[best], best))) best = g;
      }
      kept[best] = true;
    }
    for (int e = 0; e < experts; ++e) {
      if (!kept[e / per_group]) choice[e] = -INFINITY;
    }
  }
  __syncwarp();
  int chosen[kMaxTopK];
#pragma unroll
  for (int k = 0; k < kMaxTopK; ++k) chosen[k] = -1;
  for (int k = 0; k < gate.top_k; ++k) {
    float best_value = NAN;
    int best_index = -1;
    for (int e = lane; e < experts; e += 32) {
      bool taken = false;
#pragma unroll
      for (int c = 0; c < kMaxTopK; ++c) taken |= chosen[c] == e;
      if (taken) continue;
      if (best_index < 0 || Better(choice[e], e, best_value, best_index)) {
        best_value = choice[e];
        best_index = e;
      }
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other_value = __shfl_xor_sync(0xffffffffu, best_value, offset);
      const int other_index = __shfl_xor_sync(0xffffffffu, best_index, offset);
      if (other_index >= 0 && (best_index < 0 || Better(other_value, other_index, best_value, best_index))) {
        best_value = other_value;
        best_index = other_index;
      }
    }
#pragma unroll
    for (int c = 0; c < kMaxTopK; ++c) {
      if (c == k) chosen[c] = best_index;
    }
  }
  if (lane == 0) {
    float total = 0.0f;
    float values[kMaxTopK];
#pragma unroll
    for (int k = 0; k < kMaxTopK; ++k) {
      values[k] = k < gate.top_k ? scores[chosen[k]] : 0.0f;
      if (k < gate.top_k) total += values[k];
    }
    const float denominator = total + 1e-20f;
#pragma unroll
    for (int k = 0; k < kMaxTopK; ++k) {
      if (k >= gate.top_k) continue;
      float w = values[k];
      if (gate.normalize) w /= denominator;
      ids[token * gate.top_k + k] = chosen[k];
      weights[token * gate.top_k + k] = w * gate.scaling;
    }
  }
}

// ---- argmax -----------------------------------------------------------------------------------

constexpr int kArgMaxThreads = 1024;

// The argmax order: a valid index beats none, then the larger value, then the lower index.
__device__ __forceinline__ bool ArgMaxPrecedes(float value, int index, float best, int best_index) {
  return index >= 0 && (best_index < 0 || value > best || (value == best && index < best_index));
}

// Every lane's (best, best_index) becomes the warp's by ArgMaxPrecedes.
__device__ __forceinline__ void WarpArgMax(float& best, int& best_index) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, best, offset);
    const int other_index = __shfl_xor_sync(0xffffffffu, best_index, offset);
    if (ArgMaxPrecedes(other, other_index, best, best_index)) {
      best = other;
      best_index = other_index;
    }
  }
}

// Greedy decoding's bookkeeping for row b: next token, its slot in `generated`, one position on.
__device__ __forceinline__ void RecordGreedyToken(int b, int32_t index, int32_t* token_ids, int32_t* token_pos,
                                                  const int32_t* first_pos, int32_t* generated, int64_t max_steps) {
  token_ids[b] = index;
  const int64_t step = int64_t(token_pos[b]) - first_pos[b];
  if (step >= 0 && step < max_steps) generated[b * max_steps + step] = index;
  token_pos[b] += 1;
}

__device__ int BlockArgMax(const float* row, int64_t vocab) {
  float best = -INFINITY;
  int best_index = -1;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (best_index < 0 || v > best) {
      best = v;
      best_index = static_cast<int>(i);
    }
  }
  WarpArgMax(best, best_index);
  __shared__ float warp_best[32];
  __shared__ int warp_index[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warp_best[warp] = best;
    warp_index[warp] = best_index;
  }
  __syncthreads();
  int result = 0;
  if (threadIdx.x == 0) {
    float b = warp_best[0];
    int bi = warp_index[0];
    for (int w = 1; w < blockDim.x / 32; ++w) {
      if (ArgMaxPrecedes(warp_best[w], warp_index[w], b, bi)) {
        b = warp_best[w];
        bi = warp_index[w];
      }
    }
    result = bi < 0 ? 0 : bi;
  }
  return result;  // meaningful in thread 0 only
}

__global__ void __launch_bounds__(kArgMaxThreads) ArgMaxRowsKernel(const float* logits, int64_t vocab, int32_t* out) {
  const int index = BlockArgMax(logits + int64_t(blockIdx.x) * vocab, vocab);
  if (threadIdx.x == 0) out[blockIdx.x] = index;
}

__global__ void __launch_bounds__(kArgMaxThreads)
GreedyAdvanceKernel(const float* logits, int64_t vocab, int32_t* token_ids, int32_t* token_pos, const int32_t* first_pos,
                    int32_t* generated, int64_t max_steps) {
  const int b = blockIdx.x;
  const int index = BlockArgMax(logits + int64_t(b) * vocab, vocab);
  if (threadIdx.x == 0) RecordGreedyToken(b, index, token_ids, token_pos, first_pos, generated, max_steps);
}

// Two-stage greedy step for large vocabularies: block (b, p) finds the first maximum of its slice
// of row b; the finishing block of row b merges the slices (larger value, then lower index) and
// does GreedyAdvanceKernel's bookkeeping.
__global__ void __launch_bounds__(256)
ArgMaxSliceKernel(const float* logits, int64_t vocab, int64_t slice, float* part_value, int32_t* part_index) {
  const int b = blockIdx.x, p = blockIdx.y;
  const int64_t begin = int64_t(p) * slice;
  const int64_t count = begin < vocab ? (vocab - begin < slice ? vocab - begin : slice) : 0;
  const int index = count > 0 ? BlockArgMax(logits + int64_t(b) * vocab + begin, count) : -1;
  if (threadIdx.x == 0) {
    part_value[b * gridDim.y + p] = count > 0 ? logits[int64_t(b) * vocab + begin + index] : -INFINITY;
    part_index[b * gridDim.y + p] = count > 0 ? static_cast<int32_t>(begin + index) : -1;
  }
}

__global__ void GreedyFinishKernel(const float* part_value, const int32_t* part_index, int parts, int32_t* token_ids,
                                   int32_t* token_pos, const int32_t* first_pos, int32_t* generated,
                                   int64_t max_steps) {
  // One warp per row: each lane merges its slices, then the lanes merge (larger, then lower index).
  const int b = blockIdx.x, lane = threadIdx.x;
  float best = -INFINITY;
  int best_index = -1;
  for (int p = lane; p < parts; p += 32) {
    const int index = part_index[b * parts + p];
    const float value = part_value[b * parts + p];
    if (ArgMaxPrecedes(value, index, best, best_index)) {
      best = value;
      best_index = index;
    }
  }
  WarpArgMax(best, best_index);
  if (lane != 0) return;
  RecordGreedyToken(b, best_index < 0 ? 0 : best_index, token_ids, token_pos, first_pos, generated, max_steps);
}

}  // namespace

absl::Status LaunchMoeGate(const float* logits, const float* bias, const GateConfig& gate, int64_t tokens, int32_t* ids,
                           float* weights, void* stream) {
  if (gate.experts <= 0 || gate.experts > kMaxGateExperts || gate.top_k <= 0 || gate.top_k > kMaxTopK ||
      gate.top_k > gate.experts || gate.groups <= 0 || gate.experts % gate.groups != 0) {
    return absl::InvalidArgumentError("LaunchMoeGate: need experts <= 256, top_k <= 16, groups dividing experts");
  }
  if (tokens <= 0) return absl::OkStatus();
  MoeGateKernel<<<static_cast<unsigned>((tokens + kGateWarps - 1) / kGateWarps), kGateWarps * 32, 0, AsStream(stream)>>>(
      logits, bias, gate, tokens, ids, weights);
  return LastLaunchStatus("MoeGateKernel");
}

absl::Status LaunchArgMaxRows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, void* stream) {
  if (rows <= 0) return absl::OkStatus();
  ArgMaxRowsKernel<<<static_cast<unsigned>(rows), kArgMaxThreads, 0, AsStream(stream)>>>(logits, vocab, out);
  return LastLaunchStatus("ArgMaxRowsKernel");
}

absl::Status LaunchGreedyAdvance(const float* logits, int64_t batch, int64_t vocab, int32_t* token_ids,
                                 int32_t* token_pos, const int32_t* first_pos, int32_t* generated, int64_t max_steps,
                                 void* stream, void* scratch, int64_t scratch_bytes) {
  if (batch <= 0) return absl::OkStatus();
  constexpr int64_t kSlice = 2048;
  const int64_t parts = std::min<int64_t>(64, (vocab + kSlice - 1) / kSlice);
  const int64_t slice = (vocab + parts - 1) / parts;
  if (parts > 1 && scratch != nullptr && batch * parts * 8 <= scratch_bytes) {
    auto* part_value = static_cast<float*>(scratch);
    auto* part_index = reinterpret_cast<int32_t*>(part_value + batch * parts);
    ArgMaxSliceKernel<<<dim3(static_cast<unsigned>(batch), static_cast<unsigned>(parts)), 256, 0, AsStream(stream)>>>(
        logits, vocab, slice, part_value, part_index);
    if (absl::Status launched = LastLaunchStatus("ArgMaxSliceKernel"); !launched.ok()) return launched;
    GreedyFinishKernel<<<static_cast<unsigned>(batch), 32, 0, AsStream(stream)>>>(
        part_value, part_index, static_cast<int>(parts), token_ids, token_pos, first_pos, generated, max_steps);
    return LastLaunchStatus("GreedyFinishKernel");
  }
  GreedyAdvanceKernel<<<static_cast<unsigned>(batch), kArgMaxThreads, 0, AsStream(stream)>>>(
      logits, vocab, token_ids, token_pos, first_pos, generated, max_steps);
  return LastLaunchStatus("GreedyAdvanceKernel");
}

}  // namespace expertmesh::cuda
