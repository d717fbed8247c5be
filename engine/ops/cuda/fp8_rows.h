// Launchers for the activation side of the W8A8 expert path: rounding rows to FP8 E4M3 with one
// float32 scale per 128 values (scale = amax / 448, as DeepSeek-V3's inference quantizes
// activations), written in the padded per-expert layout Fp8BlockGemm reads: expert i owns padded
// rows [padded_offsets[i], padded_offsets[i + 1]) and its scales sit at padded_offsets[i] *
// blocks, block-major ([blocks][its rows]). Plain C++ header; `stream` is a cudaStream_t.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace expertmesh::cuda {

// One padded row: the gathered row it takes (-1: padding, all zeros) and its expert's index.
struct PaddedRow {
  int32_t source;
  int32_t expert;
};

// q[p, :] = E4M3(x[row_token[table[p].source], :] / scale) for p < padded_rows, x float32
// [tokens, features]; features % 128 == 0.
absl::Status LaunchQuantizeExpertRows(const float* x, const int32_t* row_token, const PaddedRow* table,
                                      const int32_t* padded_offsets, int64_t padded_rows, int64_t features,
                                      uint8_t* q, float* scales, void* stream);

// h = silu(gate_up[p, j]) * gate_up[p, I + j] from the bf16 products [padded rows, 2I], rounded to
// E4M3 per 128 values of j in the same layout, for padded rows p in [row_begin, row_begin + rows)
// (one expert's, so each expert's chain can run on its own stream; padding rows give zero).
absl::Status LaunchQuantizeSwiGlu(const uint16_t* gate_up, const PaddedRow* table, const int32_t* padded_offsets,
                                  int64_t row_begin, int64_t rows, int64_t intermediate, uint8_t* q, float* scales,
                                  void* stream);

}  // namespace expertmesh::cuda
