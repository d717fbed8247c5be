// Launchers for the CUDA kernels of the engine's GPU backend. This header is plain C++ (no CUDA
// headers), so host code built by the C++ compiler can call into the .cu files; each launcher
// enqueues on `stream` (a cudaStream_t, nullptr for the default stream) and reports launch errors.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace expertmesh::cuda {

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight, all float32, row-major [rows, cols].
absl::Status LaunchRmsNorm(const float* x, const float* weight, float* out, int64_t rows,
                           int64_t cols, float eps, void* stream);

// out[i] = silu(gate[i]) * up[i] over `count` float32 elements (the SwiGLU activation).
absl::Status LaunchSiluMultiply(const float* gate, const float* up, float* out, int64_t count,
                                void* stream);

// out[i] = float(bf16 bits[i]): widens a bf16 tensor on the device.
absl::Status LaunchBFloat16ToFloat(const uint16_t* bits, float* out, int64_t count, void* stream);

}  // namespace expertmesh::cuda
