// CublasContext: owns one cuBLAS handle and its workspace (so calls can be captured into CUDA
// graphs; one context per concurrently used stream) and exposes the row-major products the GPU
// engine needs: nn.Linear-style y = x * W^T, plain products and strided batches (per attention
// head) or over arrays of pointers (routed experts padded to one row count). Plain C++ header;
// float32 or bf16 operands, float32 math. (cuBLAS 13.1's grouped GEMM answers NOT_SUPPORTED for
// bf16, measured on the H100, so experts use per-expert GEMMs or a padded pointer batch.)
#pragma once

#include <cstdint>
#include <memory>

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
  bool fast_tf32 = false;  // float32 operands through TF32 tensor cores (10-bit mantissa inputs)
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

  // `batch` products of one shape whose operands are device arrays of pointers (a[i], b[i], c[i];
  // each array in device memory): shape.batch and the strides are ignored.
  absl::Status GemmPointerBatch(const GemmShape& shape, const void* const* a, const void* const* b, void* const* c,
                                int64_t batch, ElementType ab_type, ElementType c_type, void* stream);

  // y[rows, out] = x[rows, in] * W[out, in]^T (+ y when accumulate), packed rows.
  absl::Status Linear(const void* x, int64_t rows, int64_t in_features, const void* weight,
                      int64_t out_features, void* y, ElementType ab_type, ElementType c_type,
                      void* stream, bool accumulate = false);

 private:
  CublasContext() = default;
  void* handle_ = nullptr;  // cublasHandle_t
  DeviceBuffer workspace_;
};

}  // namespace expertmesh::cuda
