// Launchers for the routed-expert (MoE) kernels: permute a batch's token slots by expert, gather
// activations, run each expert's SwiGLU over its rows (tensor-core kernels for few rows per
// expert, where the weights' bytes dominate; a SiLU*up epilogue for the cuBLAS path), and combine
// the weighted expert outputs back into one row per token. Plain C++ header: device pointers are
// typed as raw integers (bf16 = uint16_t, fp8 E4M3 = uint8_t); `stream` is a cudaStream_t.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace expertmesh::cuda {

// Groups the slots of expert_ids [num_slots] (= tokens * top_k; -1 = empty slot) by the local
// slot of their expert (slot_of_expert [n_routed_experts], -1 = not held). Writes offsets
// [num_local + 1] (rows of local slot e are offsets[e]..offsets[e+1]), row_token [rows] (token of
// each row) and row_of_slot [num_slots] (-1 for empty slots). Rows within an expert come in no
// fixed order (each row is computed independently, so results do not depend on it). Sets *error
// to 1 when an id is >= n_routed_experts or names an expert not held (that slot is dropped).
// `active` (may be null; [num_local + 1]) receives the local slots that got rows: active[0] = their
// count, active[1..] = the slots in increasing order. `work`: device scratch of at least
// ExpertPermutationWorkInts(num_slots, num_local) ints (per-block counts); num_local <= 1024.
absl::Status LaunchBuildExpertPermutation(const int32_t* expert_ids, int64_t num_slots, int64_t top_k,
                                          const int32_t* slot_of_expert, int64_t n_routed_experts,
                                          int64_t num_local, int32_t* offsets, int32_t* row_token,
                                          int32_t* row_of_slot, int32_t* active, int32_t* error, int32_t* work,
                                          int64_t work_ints, void* stream);
// Blocks the permutation spreads num_slots over (chunks of ~kPermutationChunk slots), and the
// scratch it needs.
inline constexpr int64_t kPermutationChunk = 1024;
inline constexpr int64_t kPermutationMaxBlocks = 256;
int64_t ExpertPermutationBlocks(int64_t num_slots);
int64_t ExpertPermutationWorkInts(int64_t num_slots, int64_t num_local);

// Element type of gathered rows: float32 (cuBLAS float32 path), bf16 (bf16 experts), f16 (FP8
// experts, whose MMA runs in f16 on the exactly converted E4M3 values).
enum class RowType { kF32, kBF16, kF16 };

// rows_out[row_of_slot[t * top_k + k], :] = x[t, :] for every slot with a row (>= 0), converted to
// `type`; x is float32 [tokens, hidden]. Token by token: each row of x is read once, however many
// experts take it.
absl::Status LaunchGatherRows(const float* x, const int32_t* row_of_slot, int64_t tokens, int64_t top_k,
                              int64_t hidden, void* rows_out, RowType type, void* stream);

// Which experts the tensor-core kernels visit and how a block splits its work. Without `active`,
// grid row e is local slot e (experts = num_local; slots without rows exit at once). With `active`
// (from LaunchBuildExpertPermutation), grid row i is slot active[1 + i] while i < active[0], so
// `experts` need only be min(num_local, token slots). A block's 8 warps take 8 / split units of
// weight rows, the `split` warps of a unit dividing its k range (1, 2, 4 or 8).
// `weight_ring`: weights stream through a 3-stage cp.async ring per warp in shared memory (two
// steps of loads in flight per warp); false: loaded into registers, one step in flight.
struct ExpertGrid {
  int64_t experts = 0;
  const int32_t* active = nullptr;
  int split = 8;
  bool weight_ring = true;
};

// The split that gives about `target_warps` warps in all (e.g. 16 per SM) for `units` units of
// weight rows per expert and `expected_experts` experts with rows, keeping >= 2 steps of 128 k-values
// per warp. 8 for few units, 1 when units alone fill the GPU.
int ChooseSplitK(int64_t units, int64_t expected_experts, int64_t k, int64_t target_warps);

// Sets the tensor-core kernels' shared-memory attributes (their cp.async weight rings). Called by
// the launchers; call it once before capturing them into a CUDA graph.
absl::Status PrepareExpertKernels();

// Tensor-core SwiGLU halves for rows grouped by expert (mma.sync, float32 accumulation).
// gate_up[e] points to expert e's [2I, H] weights (gate rows, then up rows): bf16 with bf16 rows,
// or FP8 E4M3 with f16 rows and block scales gate_up_scale[e] ([2 * ceil(I/128), ceil(H/128)]
// float32: gate's blocks, then up's), applied per 128-wide k block after the MMA.
// h[r, j] = silu(x_r . gate_j) * (x_r . up_j) (bf16, or f16 for FP8) for rows of every local
// expert. Needs H % 8 == 0 and I % 8 == 0 (16-byte rows). Units are 8 gate + 8 up rows.
absl::Status LaunchExpertGateUp(const uint16_t* x_rows, const int32_t* offsets, const ExpertGrid& grid,
                                const void* const* gate_up, const float* const* gate_up_scale,
                                bool fp8, int64_t hidden, int64_t intermediate, uint16_t* h,
                                void* stream);

// y[r, i] = h_r . down_i (float32) with down[e] = expert e's [H, I] weights (bf16 with bf16 h, or
// FP8 with f16 h and down_scale[e] [ceil(H/128), ceil(I/128)]). Units are 16 output rows.
absl::Status LaunchExpertDown(const uint16_t* h, const int32_t* offsets, const ExpertGrid& grid,
                              const void* const* down, const float* const* down_scale, bool fp8,
                              int64_t hidden, int64_t intermediate, float* y, void* stream);

// cuBLAS-path epilogue: h[r, j] = silu(gate_up[r, j]) * gate_up[r, I + j] for rows r < rows;
// gate_up is float32 (or bf16 with `from_bf16`) [rows, 2I]; h is bf16 (`to_bf16`) or float32 [rows, I].
// Each thread takes 16 bytes of each half at a time where the halves are whole, 16-byte aligned
// pieces, else one value.
absl::Status LaunchSiluMultiplyRows(const void* gate_up, int64_t rows, int64_t intermediate, void* h,
                                    bool to_bf16, void* stream, bool from_bf16 = false);

// The padded layout of the batched cuBLAS path: out[i] = padded_base[e] + (r - offsets[e]) for
// r = row_of_slot[i] >= 0 and e the local slot with offsets[e] <= r < offsets[e + 1]; -1 stays -1.
absl::Status LaunchPadRowsOfSlots(const int32_t* row_of_slot, int64_t num_slots, const int32_t* offsets,
                                  int64_t num_local, const int32_t* padded_base, int32_t* out, void* stream);

// out[t, :] (= or +=) sum_k gate_weights[t, k] * y[row_of_slot[t, k], :] over non-empty slots;
// y is float32 (or bf16 with `y_bf16`) [rows, hidden].
absl::Status LaunchCombineExpertRows(const void* y, const int32_t* row_of_slot, const float* gate_weights,
                                     int64_t tokens, int64_t top_k, int64_t hidden, float* out,
                                     bool accumulate, void* stream, bool y_bf16 = false);

// out[r, c] = bf16(fp8[r, c] * scale(r, c)) for a [rows, cols] E4M3 tensor whose first
// `split_rows` rows use scale blocks [r / 128] and the rest, a second stacked tensor, use
// [ceil(split_rows / 128) + (r - split_rows) / 128] (pass split_rows = rows for one tensor).
absl::Status LaunchDequantizeFp8Block(const uint8_t* fp8, const float* scale, int64_t rows, int64_t cols,
                                      int64_t split_rows, uint16_t* out, void* stream);

// float32 -> bf16 (round to nearest even) and float32 -> float32 copies of `count` elements.
absl::Status LaunchFloatToBFloat16(const float* in, uint16_t* out, int64_t count, void* stream);

}  // namespace expertmesh::cuda
