// CpuBackend: forwards to engine/ops' CPU functions.
#include "engine/ops/compute_backend.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"

namespace expertmesh::ops {

void CpuBackend::Linear(std::span<const float> input, int64_t rows, int64_t in_features,
                        std::span<const float> weight, int64_t out_features,
                        std::span<float> output, bool accumulate) const {
  MatMulTransposed(input, rows, in_features, weight, out_features, output, accumulate);
}

void CpuBackend::RmsNorm(std::span<const float> x, int64_t rows, int64_t cols,
                         std::span<const float> weight, float eps, std::span<float> out) const {
  ops::RmsNorm(x, rows, cols, weight, eps, out);
}

void CpuBackend::SiluMultiply(std::span<const float> gate, std::span<const float> up,
                              std::span<float> out) const {
  ops::SiluMultiply(gate, up, out);
}

const ComputeBackend& DefaultCpuBackend() {
  static const CpuBackend backend;
  return backend;
}

}  // namespace expertmesh::ops
