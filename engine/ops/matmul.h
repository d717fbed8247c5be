// Dense matrix products of the CPU engine, backed by OpenBLAS. Every linear layer of the model is
// y[rows, out] = x[rows, in] * W[out, in]^T (PyTorch's nn.Linear layout, as stored in checkpoints).
#pragma once

#include <cstdint>
#include <span>

namespace expertmesh::ops {

// output[rows, out_features] = input[rows, in_features] * weight[out_features, in_features]^T
// (+ output when `accumulate`). Sizes are checked with assertions only: callers validate shapes.
void MatMulTransposed(std::span<const float> input, int64_t rows, int64_t in_features,
                      std::span<const float> weight, int64_t out_features, std::span<float> output,
                      bool accumulate = false);

// output[rows, cols] = a[rows, inner] * b[inner, cols] (plain row-major product).
void MatMul(std::span<const float> a, int64_t rows, int64_t inner, std::span<const float> b,
            int64_t cols, std::span<float> output);

}  // namespace expertmesh::ops
