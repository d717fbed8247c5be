// RmsNorm, SiluMultiply, SoftmaxInPlace, SigmoidInPlace.
#include "engine/ops/elementwise.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

namespace expertmesh::ops {

void RmsNorm(std::span<const float> x, int64_t rows, int64_t cols, std::span<const float> weight,
             float eps, std::span<float> out) {
  assert(static_cast<int64_t>(weight.size()) == cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float* in_row = x.data() + r * cols;
    float* out_row = out.data() + r * cols;
    double sum_squares = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum_squares += double(in_row[c]) * double(in_row[c]);
    // PyTorch: x * rsqrt(mean(x^2) + eps) in float32, then * weight.
    const float variance = static_cast<float>(sum_squares / static_cast<double>(cols));
    const float inverse_rms = 1.0f / std::sqrt(variance + eps);
    for (int64_t c = 0; c < cols; ++c) out_row[c] = weight[c] * (in_row[c] * inverse_rms);
  }
}

void SiluMultiply(std::span<const float> gate, std::span<const float> up, std::span<float> out) {
  assert(gate.size() == up.size() && out.size() >= gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void SoftmaxInPlace(std::span<float> row) {
  if (row.empty()) return;
  const float max_value = *std::max_element(row.begin(), row.end());
  if (max_value == -std::numeric_limits<float>::infinity()) {
    std::fill(row.begin(), row.end(), 0.0f);  // nothing attendable
    return;
  }
  double total = 0.0;
  for (float& v : row) {
    v = std::exp(v - max_value);
    total += v;
  }
  const float inverse_total = static_cast<float>(1.0 / total);
  for (float& v : row) v *= inverse_total;
}

void SigmoidInPlace(std::span<float> values) {
  for (float& v : values) v = 1.0f / (1.0f + std::exp(-v));
}

}  // namespace expertmesh::ops
