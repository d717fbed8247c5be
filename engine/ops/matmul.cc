// MatMulTransposed / MatMul on cblas_sgemm (row-major, float32).
#include "engine/ops/matmul.h"

#include <cassert>

#include <cblas.h>

namespace expertmesh::ops {

void MatMulTransposed(std::span<const float> input, int64_t rows, int64_t in_features,
                      std::span<const float> weight, int64_t out_features, std::span<float> output,
                      bool accumulate) {
  assert(static_cast<int64_t>(input.size()) >= rows * in_features);
  assert(static_cast<int64_t>(weight.size()) >= out_features * in_features);
  assert(static_cast<int64_t>(output.size()) >= rows * out_features);
  if (rows == 0 || out_features == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
              static_cast<int>(out_features), static_cast<int>(in_features), 1.0f, input.data(),
              static_cast<int>(in_features), weight.data(), static_cast<int>(in_features),
              accumulate ? 1.0f : 0.0f, output.data(), static_cast<int>(out_features));
}

void MatMul(std::span<const float> a, int64_t rows, int64_t inner, std::span<const float> b,
            int64_t cols, std::span<float> output) {
  assert(static_cast<int64_t>(a.size()) >= rows * inner);
  assert(static_cast<int64_t>(b.size()) >= inner * cols);
  assert(static_cast<int64_t>(output.size()) >= rows * cols);
  if (rows == 0 || cols == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
              static_cast<int>(cols), static_cast<int>(inner), 1.0f, a.data(),
              static_cast<int>(inner), b.data(), static_cast<int>(cols), 0.0f, output.data(),
              static_cast<int>(cols));
}

}  // namespace expertmesh::ops
