// ComputeBackend: the dense ops the model forward needs, behind one interface so a GPU backend
// can replace the CPU one without touching the model code. CpuBackend forwards to the span-based
// CPU functions of engine/ops (OpenBLAS GEMM and plain loops).
#pragma once

#include <cstdint>
#include <span>

namespace expertmesh::ops {

class ComputeBackend {
 public:
  virtual ~ComputeBackend() = default;
  // output[rows, out] = input[rows, in] * weight[out, in]^T (+ output when accumulate).
  virtual void Linear(std::span<const float> input, int64_t rows, int64_t in_features,
                      std::span<const float> weight, int64_t out_features,
                      std::span<float> output, bool accumulate = false) const = 0;
  virtual void RmsNorm(std::span<const float> x, int64_t rows, int64_t cols,
                       std::span<const float> weight, float eps, std::span<float> out) const = 0;
  virtual void SiluMultiply(std::span<const float> gate, std::span<const float> up,
                            std::span<float> out) const = 0;
};

class CpuBackend final : public ComputeBackend {
 public:
  void Linear(std::span<const float> input, int64_t rows, int64_t in_features,
              std::span<const float> weight, int64_t out_features, std::span<float> output,
              bool accumulate = false) const override;
  void RmsNorm(std::span<const float> x, int64_t rows, int64_t cols, std::span<const float> weight,
               float eps, std::span<float> out) const override;
  void SiluMultiply(std::span<const float> gate, std::span<const float> up,
                    std::span<float> out) const override;
};

// Process-wide CPU backend (stateless, thread-safe).
const ComputeBackend& DefaultCpuBackend();

}  // namespace expertmesh::ops
