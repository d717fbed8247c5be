// Row-wise and element-wise CPU ops: RMSNorm, the SwiGLU activation, softmax and sigmoid.
// All float32 in and out; reductions accumulate in double so results match PyTorch's float32
// reductions to well under 1e-6 relative.
#pragma once

#include <cstdint>
#include <span>

namespace expertmesh::ops {

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight  (x and out may alias).
void RmsNorm(std::span<const float> x, int64_t rows, int64_t cols, std::span<const float> weight,
             float eps, std::span<float> out);

// out[i] = silu(gate[i]) * up[i], silu(v) = v / (1 + exp(-v)).  out may alias gate or up.
void SiluMultiply(std::span<const float> gate, std::span<const float> up, std::span<float> out);

// Numerically stable softmax of one row, in place. -inf entries get probability 0.
void SoftmaxInPlace(std::span<float> row);

// values[i] = 1 / (1 + exp(-values[i])), in place.
void SigmoidInPlace(std::span<float> values);

}  // namespace expertmesh::ops
