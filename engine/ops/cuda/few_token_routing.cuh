// Routing decode of the few-token expert kernels (few_token_expert_kernels.cu): every block turns
// the batch's few (token, expert, gate weight) slots into one entry per distinct local expert, in
// shared memory, so no permutation kernel runs first. Included by .cu files only.
#pragma once

#include <cstdint>

#include "engine/ops/cuda/few_token_experts.h"

namespace expertmesh::cuda::few_token {

constexpr int kMaxTokens = static_cast<int>(kFewTokenMaxTokens);
constexpr int kMaxSlots = static_cast<int>(kFewTokenMaxTokens * kFewTokenMaxTopK);  // 64: two per lane
static_assert(kMaxSlots <= 64, "routing decode handles two slots per lane");

// The batch's routing as every block decodes it: `count` entries, one per distinct local expert
// (a token naming the same expert twice adds its gate weights), each with the tokens it serves,
// their summed gate weights and the batch slot whose h row holds that token's SwiGLU output.
struct Routing {
  int32_t count;
  int32_t local[kMaxSlots];
  uint32_t tokens[kMaxSlots];  // bit t: token t is routed to the entry
  float weight[kMaxSlots][kMaxTokens];
  int32_t slot[kMaxSlots][kMaxTokens];
};

// Run by warp 0 of every block; lane l looks at slots l and l + 32.
__device__ inline void DecodeRouting(const FewTokenExpertBatch& batch, Routing& routing, bool report_errors) {
  const int lane = threadIdx.x & 31;
  const int slots = static_cast<int>(batch.tokens * batch.top_k), top_k = static_cast<int>(batch.top_k);
  const int n_routed = static_cast<int>(batch.n_routed);
  int local[2];
  float weight[2];
  bool bad = false;
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const int s = lane + 32 * q;
    local[q] = -1;
    weight[q] = 0.0f;
    if (s < slots) {
      const int32_t id = batch.expert_ids[s];
      if (id >= n_routed) {
        bad = true;
      } else if (id >= 0) {
        local[q] = batch.slot_of_expert[id];
        bad |= local[q] < 0;
        weight[q] = batch.gate_weights[s];
      }
    }
  }
  if (report_errors && __any_sync(0xffffffffu, bad) && lane == 0) *batch.error = 1;
  for (int d = lane; d < kMaxSlots; d += 32) {
    routing.tokens[d] = 0;
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      routing.weight[d][t] = 0.0f;
      routing.slot[d][t] = -1;
    }
  }
  // For each of my slots: the first slot naming the same expert (the entry's leader), the first
  // slot of the same token naming it, and that token's gate weights for it summed in slot order.
  int first_of_expert[2] = {lane, lane + 32}, first_of_pair[2] = {lane, lane + 32};
  float summed[2] = {0.0f, 0.0f};
  for (int j = 0; j < slots; ++j) {
    const int other = __shfl_sync(0xffffffffu, j < 32 ? local[0] : local[1], j & 31);
    const float other_weight = __shfl_sync(0xffffffffu, j < 32 ? weight[0] : weight[1], j & 31);
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int s = lane + 32 * q;
      if (local[q] < 0 || other != local[q]) continue;
      first_of_expert[q] = min(first_of_expert[q], j);
      if (j / top_k == s / top_k) {
        first_of_pair[q] = min(first_of_pair[q], j);
        summed[q] += other_weight;
      }
    }
  }
  const uint32_t leaders_low = __ballot_sync(0xffffffffu, local[0] >= 0 && first_of_expert[0] == lane);
  const uint32_t leaders_high = __ballot_sync(0xffffffffu, local[1] >= 0 && first_of_expert[1] == lane + 32);
  const auto rank = [](uint32_t low, uint32_t high, int slot) {  // leaders before `slot`
    return slot < 32 ? __popc(low & ((1u << slot) - 1u)) : __popc(low) + __popc(high & ((1u << (slot - 32)) - 1u));
  };
  __syncwarp();
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const int s = lane + 32 * q;
    if (local[q] < 0) continue;
    const int entry = rank(leaders_low, leaders_high, first_of_expert[q]);
    if (first_of_expert[q] == s) routing.local[entry] = local[q];
    if (first_of_pair[q] == s) {
      const int t = s / top_k;
      routing.weight[entry][t] = summed[q];
      routing.slot[entry][t] = s;
      atomicOr(&routing.tokens[entry], 1u << t);
    }
  }
  if (lane == 0) routing.count = __popc(leaders_low) + __popc(leaders_high);
}

}  // namespace expertmesh::cuda::few_token
