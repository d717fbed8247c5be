// Launchers for the decode-time linear layers of the GPU model: nn.Linear-style products
// y[r, :] (= or +=) x[r, :] W^T and the fused SwiGLU h[r, j] = silu(x_r . gate_j) * (x_r . up_j),
// for a few float32 activation rows (decode steps) against bf16 weights. They run on the
// tensor-core skinny kernels of the routed experts (16-byte weight loads, split-k sized to fill
// the GPU) and round the float32 rows to bf16 while loading them, so no conversion kernel runs
// before them. Plain C++ header; `stream` is a cudaStream_t.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace expertmesh::cuda {

// Rows handled per launch (more are processed in passes of 32 over the same weights).
inline constexpr int64_t kDecodeLinearMaxRows = 64;

// Sets the kernels' shared-memory attributes (cp.async weight rings); called by the launchers,
// call it once before capturing them into a CUDA graph.
absl::Status PrepareDecodeLinearKernels();

// y[r, n] (= or += when accumulate) sum_k x[r, k] * W[n, k] for r < rows; x float32 [rows, K],
// W bf16 [N, K], y float32 [rows, N]. Needs K % 8 == 0, rows <= kDecodeLinearMaxRows.
// `weight_ring`: weights through the kernels' cp.async rings (else straight into registers).
absl::Status LaunchDecodeLinear(const float* x, int64_t rows, int64_t k, const uint16_t* weight, int64_t n, float* y,
                                bool accumulate, void* stream, bool weight_ring = true);

// h[r, j] = silu(x_r . W[j]) * (x_r . W[I + j]) with W = [gate; up] bf16 [2I, K]; h float32
// [rows, I]. Needs K % 8 == 0, rows <= kDecodeLinearMaxRows.
absl::Status LaunchDecodeSwiGlu(const float* x, int64_t rows, int64_t k, const uint16_t* gate_up,
                                int64_t intermediate, float* h, void* stream, bool weight_ring = true);

}  // namespace expertmesh::cuda
