// CublasContext: owns one cuBLAS handle and its workspace (so calls can be captured into CUDA
// graphs) and exposes the row-major products the GPU engine needs: nn.Linear-style
// y = x * W^T, plain products, strided batches (per attention head) and grouped batches (one
// GEMM per expert in a single call). Plain C++ header; float32 or bf16 operands, float32 math.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "engine/ops/cuda/cuda_device.h"

namespace expertmesh::cuda {

enum class ElementType { kF32, kBF16 };
size_t ElementBytes(ElementType type);

// One row-major product C[M, N] = A[M, K] * op(B) (+ beta * C), batched with element strides.
// op(B) = B^T when b_transposed (B stored [N, K], nn.Linear weights), else B ([K, N]).
struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  // row strides in elements
  bool b_transposed = true;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // element strides between batch items
  float alpha = 1.0f;
  float beta = 0.0f;
};

// One group of a grouped GEMM: C_g[m_g, n] = A_g[m_g, k] * B_g[n, k]^T, all row-major packed.
struct GroupedGemmItem {
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  int64_t m = 0;
};

class CublasContext {
 public:
  static absl::StatusOr<std::unique_ptr<CublasContext>> Create();
  ~CublasContext();
  CublasContext(const CublasContext&) = delete;
  CublasContext& operator=(const CublasContext&) = delete;

  // A and B share `ab_type`; C is `c_type`. Enqueued on `stream` (cudaStream_t).
  absl::Status Gemm(const GemmShape& shape, const void* a, const void* b, void* c, ElementType ab_type,
                    ElementType c_type, void* stream);

  // y[rows, out] = x[rows, in] * W[out, in]^T (+ y when accumulate), packed rows.
  absl::Status Linear(const void* x, int64_t rows, int64_t in_features, const void* weight,
                      int64_t out_features, void* y, ElementType ab_type, ElementType c_type,
                      void* stream, bool accumulate = false);

  // One cublasGemmGroupedBatchedEx call over `items` (items with m == 0 are skipped); every item
  // is C[m, n] = A[m, k] * B[n, k]^T. Not capturable (uploads the pointer arrays).
  absl::Status GroupedLinear(std::span<const GroupedGemmItem> items, int64_t n, int64_t k,
                             ElementType ab_type, ElementType c_type, void* stream);

 private:
  CublasContext() = default;
  void* handle_ = nullptr;  // cublasHandle_t
  DeviceBuffer workspace_;
  DeviceBuffer pointer_arrays_;  // device copies of the grouped GEMM's A/B/C pointer arrays
};

}  // namespace expertmesh::cuda
