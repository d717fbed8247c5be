// CublasContext: row-major products mapped onto column-major cuBLAS (C^T = op(B)^T-view * A^T).
#include "engine/ops/cuda/cublas_gemm.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>


#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/ops/cuda/cuda_status.h"

namespace expertmesh::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;

absl::Status BlasStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cublasGetStatusName(status), " (",
                                          cublasGetStatusString(status), ")"));
}

cudaDataType_t DataType(ElementType type) { return type == ElementType::kF32 ? CUDA_R_32F : CUDA_R_16BF; }

cublasHandle_t Handle(void* handle) { return static_cast<cublasHandle_t>(handle); }

}  // namespace

size_t ElementBytes(ElementType type) { return type == ElementType::kF32 ? 4 : 2; }

absl::StatusOr<std::unique_ptr<CublasContext>> CublasContext::Create() {
  EXPERTMESH_RETURN_IF_ERROR(CheckDeviceAvailable());
  std::unique_ptr<CublasContext> context(new CublasContext());
  cublasHandle_t handle = nullptr;
  EXPERTMESH_RETURN_IF_ERROR(BlasStatus(cublasCreate(&handle), "cublasCreate"));
  context->handle_ = handle;
  EXPERTMESH_ASSIGN_OR_RETURN(context->workspace_, DeviceBuffer::Allocate(kWorkspaceBytes));
  EXPERTMESH_RETURN_IF_ERROR(
      BlasStatus(cublasSetWorkspace(handle, context->workspace_.data(), kWorkspaceBytes), "cublasSetWorkspace"));
  // Float32 operands stay float32 (no TF32): the GPU engine's f32 mode is the fidelity mode.
  EXPERTMESH_RETURN_IF_ERROR(BlasStatus(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode"));
  return context;
}

CublasContext::~CublasContext() {
  if (handle_ != nullptr) cublasDestroy(Handle(handle_));
}

absl::Status CublasContext::Gemm(const GemmShape& s, const void* a, const void* b, void* c, ElementType ab_type,
                                 ElementType c_type, void* stream) {
  if (s.m < 0 || s.n < 0 || s.k < 0 || s.batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Gemm: bad shape m=", s.m, " n=", s.n, " k=", s.k));
  }
  if (s.m == 0 || s.n == 0) return absl::OkStatus();
  cublasHandle_t handle = Handle(handle_);
  EXPERTMESH_RETURN_IF_ERROR(BlasStatus(cublasSetStream(handle, static_cast<cudaStream_t>(stream)), "cublasSetStream"));
  // Row-major C[M,N] = A[M,K] op(B) is column-major C^T[N,M] = op(B)^T A^T: swap the operands.
  const cublasOperation_t op_b = s.b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cudaDataType_t ab = DataType(ab_type), ct = DataType(c_type);
  const cublasComputeType_t compute =
      s.fast_tf32 && ab_type == ElementType::kF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  if (s.batch == 1) {
    return BlasStatus(cublasGemmEx(handle, op_b, CUBLAS_OP_N, static_cast<int>(s.n), static_cast<int>(s.m),
                                   static_cast<int>(s.k), &s.alpha, b, ab, static_cast<int>(s.ldb), a, ab,
                                   static_cast<int>(s.lda), &s.beta, c, ct, static_cast<int>(s.ldc), compute,
                                   CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx");
  }
  return BlasStatus(cublasGemmStridedBatchedEx(handle, op_b, CUBLAS_OP_N, static_cast<int>(s.n), static_cast<int>(s.m),
                                               static_cast<int>(s.k), &s.alpha, b, ab, static_cast<int>(s.ldb),
                                               s.stride_b, a, ab, static_cast<int>(s.lda), s.stride_a, &s.beta, c,
                                               ct, static_cast<int>(s.ldc), s.stride_c, static_cast<int>(s.batch),
                                               compute, CUBLAS_GEMM_DEFAULT),
                    "cublasGemmStridedBatchedEx");
}

absl::Status CublasContext::GemmPointerBatch(const GemmShape& s, const void* const* a, const void* const* b,
                                             void* const* c, int64_t batch, ElementType ab_type, ElementType c_type,
                                             void* stream) {
  if (s.m < 0 || s.n < 0 || s.k < 0 || batch < 0 || batch > (int64_t(1) << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("GemmPointerBatch: bad shape m=", s.m, " n=", s.n, " k=", s.k,
                                                   " batch=", batch));
  }
  if (s.m == 0 || s.n == 0 || batch == 0) return absl::OkStatus();
  cublasHandle_t handle = Handle(handle_);
  EXPERTMESH_RETURN_IF_ERROR(BlasStatus(cublasSetStream(handle, static_cast<cudaStream_t>(stream)), "cublasSetStream"));
  const cublasOperation_t op_b = s.b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cudaDataType_t ab = DataType(ab_type), ct = DataType(c_type);
  // Row-major as in Gemm: the operands swap (C^T = op(B)^T A^T).
  return BlasStatus(cublasGemmBatchedEx(handle, op_b, CUBLAS_OP_N, static_cast<int>(s.n), static_cast<int>(s.m),
                                        static_cast<int>(s.k), &s.alpha, b, ab, static_cast<int>(s.ldb), a, ab,
                                        static_cast<int>(s.lda), &s.beta, c, ct, static_cast<int>(s.ldc),
                                        static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    "cublasGemmBatchedEx");
}

absl::Status CublasContext::Linear(const void* x, int64_t rows, int64_t in_features, const void* weight,
                                   int64_t out_features, void* y, ElementType ab_type, ElementType c_type,
                                   void* stream, bool accumulate) {
  GemmShape shape;
  shape.m = rows;
  shape.n = out_features;
  shape.k = in_features;
  shape.lda = in_features;
  shape.ldb = in_features;
  shape.ldc = out_features;
  shape.beta = accumulate ? 1.0f : 0.0f;
  return Gemm(shape, x, weight, y, ab_type, c_type, stream);
}

}  // namespace expertmesh::cuda
