// Shared helpers of the GPU tests: skip-with-reason when no GPU is present (ctest turns the
// "skipped: no GPU" line into a skip), relative-norm error, random tensors, and FP8 block
// quantization on the host (so the CPU reference can use exactly the dequantized weights).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "engine/core/dtype.h"
#include "engine/core/tensor.h"
#include "engine/ops/cuda/cuda_device.h"

namespace expertmesh::gpu_testing {

#define EXPERTMESH_SKIP_WITHOUT_GPU()                                              \
  do {                                                                             \
    const absl::Status gpu_status_ = ::expertmesh::cuda::CheckDeviceAvailable();   \
    if (!gpu_status_.ok()) GTEST_SKIP() << "skipped: no GPU (" << gpu_status_.message() << ")"; \
  } while (0)

// ||a - b|| / ||b||; infinity when a holds a NaN or the sizes differ.
inline double RelativeNormError(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) return INFINITY;
  double error = 0.0, norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    const double d = double(a[i]) - double(b[i]);
    error += d * d;
    norm += double(b[i]) * double(b[i]);
  }
  return norm == 0.0 ? std::sqrt(error) : std::sqrt(error / norm);
}

inline Tensor RandomTensor(std::vector<int64_t> shape, std::mt19937_64& rng, float scale) {
  Tensor t(std::move(shape));
  std::uniform_real_distribution<float> uniform(-scale, scale);
  for (float& v : t.values()) v = uniform(rng);
  return t;
}

inline std::vector<float> RandomVector(size_t count, std::mt19937_64& rng, float scale) {
  std::vector<float> v(count);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  for (float& x : v) x = uniform(rng);
  return v;
}

// DeepSeek-V3 FP8 layout: E4M3 values q and per 128x128 block scale_inv s with w ~= q * s.
struct Fp8Tensor {
  std::vector<uint8_t> values;
  std::vector<float> scale_inv;  // [ceil(rows/128), ceil(cols/128)]
  Tensor dequantized;            // q * s as float32: what the GPU is meant to compute with
};

inline Fp8Tensor QuantizeFp8Block(const Tensor& t) {
  const int64_t rows = t.dim(0), cols = t.dim(1);
  const int64_t block_rows = (rows + 127) / 128, block_cols = (cols + 127) / 128;
  Fp8Tensor out;
  out.values.resize(rows * cols);
  out.scale_inv.assign(block_rows * block_cols, 0.0f);
  out.dequantized = Tensor({rows, cols});
  for (int64_t br = 0; br < block_rows; ++br) {
    for (int64_t bc = 0; bc < block_cols; ++bc) {
      float largest = 0.0f;
      for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r) {
        for (int64_t c = bc * 128; c < std::min(cols, bc * 128 + 128); ++c) {
          largest = std::max(largest, std::fabs(t.data()[r * cols + c]));
        }
      }
      const float scale = largest > 0.0f ? largest / 448.0f : 1.0f;
      out.scale_inv[br * block_cols + bc] = scale;
      for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r) {
        for (int64_t c = bc * 128; c < std::min(cols, bc * 128 + 128); ++c) {
          const uint8_t q = FloatToFloat8E4M3(t.data()[r * cols + c] / scale);
          out.values[r * cols + c] = q;
          out.dequantized.data()[r * cols + c] = Float8E4M3ToFloat(q) * scale;
        }
      }
    }
  }
  return out;
}

template <typename T>
std::span<const std::byte> AsBytes(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

}  // namespace expertmesh::gpu_testing
