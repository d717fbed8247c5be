// CublasContext: row-major products mapped onto column-major cuBLAS (C^T = op(B)^T-view * A^T).
#include "engine/ops/cuda/cublas_gemm.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <vector>

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
  if (s.batch == 1) {
    return BlasStatus(cublasGemmEx(handle, op_b, CUBLAS_OP_N, static_cast<int>(s.n), static_cast<int>(s.m),
                                   static_cast<int>(s.k), &s.alpha, b, ab, static_cast<int>(s.ldb), a, ab,
                                   static_cast<int>(s.lda), &s.beta, c, ct, static_cast<int>(s.ldc),
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx");
  }
  return BlasStatus(cublasGemmStridedBatchedEx(handle, op_b, CUBLAS_OP_N, static_cast<int>(s.n), static_cast<int>(s.m),
                                               static_cast<int>(s.k), &s.alpha, b, ab, static_cast<int>(s.ldb),
                                               s.stride_b, a, ab, static_cast<int>(s.lda), s.stride_a, &s.beta, c,
                                               ct, static_cast<int>(s.ldc), s.stride_c, static_cast<int>(s.batch),
                                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    "cublasGemmStridedBatchedEx");
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

absl::Status CublasContext::GroupedLinear(std::span<const GroupedGemmItem> items, int64_t n, int64_t k,
                                          ElementType ab_type, ElementType c_type, void* stream) {
  std::vector<const void*> a_pointers, b_pointers;
  std::vector<void*> c_pointers;
  std::vector<int> m_sizes, n_sizes, k_sizes, ld_a, ld_b, ld_c, group_sizes;
  std::vector<float> alphas, betas;
  std::vector<cublasOperation_t> op_a, op_b;
  for (const GroupedGemmItem& item : items) {
    if (item.m <= 0) continue;
    // Column-major: C^T[n, m] = B[n,k] (op T on the stored [k,n] view) * A^T[k, m].
    a_pointers.push_back(item.b);
    b_pointers.push_back(item.a);
    c_pointers.push_back(item.c);
    m_sizes.push_back(static_cast<int>(n));
    n_sizes.push_back(static_cast<int>(item.m));
    k_sizes.push_back(static_cast<int>(k));
    ld_a.push_back(static_cast<int>(k));
    ld_b.push_back(static_cast<int>(k));
    ld_c.push_back(static_cast<int>(n));
    group_sizes.push_back(1);
    alphas.push_back(1.0f);
    betas.push_back(0.0f);
    op_a.push_back(CUBLAS_OP_T);
    op_b.push_back(CUBLAS_OP_N);
  }
  const size_t groups = a_pointers.size();
  if (groups == 0) return absl::OkStatus();
  const size_t pointer_bytes = 3 * groups * sizeof(void*);
  if (pointer_arrays_.bytes() < pointer_bytes) {
    EXPERTMESH_ASSIGN_OR_RETURN(pointer_arrays_, DeviceBuffer::Allocate(pointer_bytes));
  }
  std::vector<const void*> all(3 * groups);
  for (size_t g = 0; g < groups; ++g) {
    all[g] = a_pointers[g];
    all[groups + g] = b_pointers[g];
    all[2 * groups + g] = c_pointers[g];
  }
  auto* device_pointers = pointer_arrays_.as<const void*>();
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(device_pointers, all.data(), pointer_bytes,
                                                        cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)),
                                        "grouped GEMM pointer upload"));
  void* const* c_array = pointer_arrays_.as<void*>() + 2 * groups;
  cublasHandle_t handle = Handle(handle_);
  EXPERTMESH_RETURN_IF_ERROR(BlasStatus(cublasSetStream(handle, static_cast<cudaStream_t>(stream)), "cublasSetStream"));
  const cudaDataType_t ab = DataType(ab_type), ct = DataType(c_type);
  absl::Status status = BlasStatus(
      cublasGemmGroupedBatchedEx(handle, op_a.data(), op_b.data(), m_sizes.data(), n_sizes.data(), k_sizes.data(),
                                 alphas.data(), device_pointers, ab, ld_a.data(), device_pointers + groups, ab,
                                 ld_b.data(), betas.data(), c_array, ct, ld_c.data(), static_cast<int>(groups), group_sizes.data(),
                                 CUBLAS_COMPUTE_32F),
      "cublasGemmGroupedBatchedEx");
  if (!status.ok()) return status;
  // The host arrays above must outlive the enqueue only; cuBLAS reads them during the call.
  return absl::OkStatus();
}

}  // namespace expertmesh::cuda
