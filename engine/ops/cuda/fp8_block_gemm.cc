// Fp8BlockGemm: row-major W8A8 products on column-major cuBLASLt. D^T[out, rows] = W'[in, out]^T x
// A'[in, rows] where W' and A' are the row-major W and A read column-major ("TN", the FP8 form
// Hopper's cuBLASLt takes), weights as matrix A with 128x128 block scales, activations as B with
// one scale per 128 values.
#include "engine/ops/cuda/fp8_block_gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/dtype.h"
#include "engine/core/status_macros.h"
#include "engine/ops/cuda/cuda_status.h"

namespace expertmesh::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 16u << 20;

absl::Status LtStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cublasGetStatusName(status)));
}

cublasLtHandle_t Handle(void* handle) { return static_cast<cublasLtHandle_t>(handle); }

}  // namespace

struct Fp8BlockGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t weights = nullptr, activations = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (out != nullptr) cublasLtMatrixLayoutDestroy(out);
    if (activations != nullptr) cublasLtMatrixLayoutDestroy(activations);
    if (weights != nullptr) cublasLtMatrixLayoutDestroy(weights);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

absl::StatusOr<std::unique_ptr<Fp8BlockGemm>> Fp8BlockGemm::Create() {
  EXPERTMESH_RETURN_IF_ERROR(CheckDeviceAvailable());
  std::unique_ptr<Fp8BlockGemm> gemm(new Fp8BlockGemm());
  cublasLtHandle_t handle = nullptr;
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(cublasLtCreate(&handle), "cublasLtCreate"));
  gemm->handle_ = handle;
  for (DeviceBuffer& workspace : gemm->workspace_) {
    EXPERTMESH_ASSIGN_OR_RETURN(workspace, DeviceBuffer::Allocate(kWorkspaceBytes));
  }
  // The smallest row multiple with an algorithm; a wrong answer ends the search (the layout, not
  // the size, is then at fault).
  std::string tried;
  for (int64_t rows : {16, 32, 64}) {
    gemm->row_multiple_ = rows;
    const absl::Status known = gemm->CheckKnownProduct(rows);
    if (known.ok()) return gemm;
    absl::StrAppend(&tried, tried.empty() ? "" : "; ", known.message());
    if (!absl::IsFailedPrecondition(known)) break;
  }
  return absl::FailedPreconditionError(absl::StrCat("cuBLASLt block-scaled FP8 products unusable: ", tried));
}

Fp8BlockGemm::~Fp8BlockGemm() {
  plans_.clear();
  if (handle_ != nullptr) cublasLtDestroy(Handle(handle_));
}

absl::Status Fp8BlockGemm::CheckFeatures(int64_t in_features, int64_t out_features) {
  if (in_features <= 0 || in_features % kFeatureMultiple != 0 || out_features <= 0 ||
      out_features % kFeatureMultiple != 0 || in_features >= (int64_t(1) << 31) || out_features >= (int64_t(1) << 31)) {
    return absl::FailedPreconditionError(absl::StrCat("block-scaled FP8 product ", in_features, " -> ", out_features,
                                                      ": feature sizes must be multiples of ", kFeatureMultiple));
  }
  return absl::OkStatus();
}

absl::Status Fp8BlockGemm::CheckShape(int64_t rows, int64_t in_features, int64_t out_features) const {
  EXPERTMESH_RETURN_IF_ERROR(CheckFeatures(in_features, out_features));
  if (rows <= 0 || row_multiple_ <= 0 || rows % row_multiple_ != 0 || rows >= (int64_t(1) << 31)) {
    return absl::FailedPreconditionError(
        absl::StrCat("block-scaled FP8 product of ", rows, " rows: rows must be a multiple of ", row_multiple_));
  }
  return absl::OkStatus();
}

absl::StatusOr<Fp8BlockGemm::Plan*> Fp8BlockGemm::PlanFor(int64_t rows, int64_t in_features, int64_t out_features,
                                                          const float* w_scale, const float* a_scale) {
  auto& slot = plans_[{rows, in_features, out_features}];
  if (slot != nullptr) return slot.get();
  auto plan = std::make_unique<Plan>();
  EXPERTMESH_RETURN_IF_ERROR(
      LtStatus(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate"));
  const cublasOperation_t transposed = CUBLAS_OP_T, plain = CUBLAS_OP_N;
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                                     &transposed, sizeof(transposed)), "TRANSA"));
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &plain, sizeof(plain)), "TRANSB"));
  const cublasLtMatmulMatrixScale_t block = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const cublasLtMatmulMatrixScale_t vector = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &block, sizeof(block)),
      "A_SCALE_MODE"));
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vector, sizeof(vector)),
      "B_SCALE_MODE"));
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                                     &w_scale, sizeof(w_scale)), "A_SCALE_POINTER"));
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                                     &a_scale, sizeof(a_scale)), "B_SCALE_POINTER"));
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(
      cublasLtMatrixLayoutCreate(&plan->weights, CUDA_R_8F_E4M3, in_features, out_features, in_features),
      "weights layout"));
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(
      cublasLtMatrixLayoutCreate(&plan->activations, CUDA_R_8F_E4M3, in_features, rows, in_features),
      "activations layout"));
  EXPERTMESH_RETURN_IF_ERROR(
      LtStatus(cublasLtMatrixLayoutCreate(&plan->out, CUDA_R_16BF, out_features, rows, out_features), "out layout"));
  cublasLtMatmulPreference_t preference = nullptr;
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(cublasLtMatmulPreferenceCreate(&preference), "preference"));
  const size_t workspace = kWorkspaceBytes;
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                       sizeof(workspace));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t heuristic = cublasLtMatmulAlgoGetHeuristic(Handle(handle_), plan->desc, plan->weights,
                                                                  plan->activations, plan->out, plan->out, preference,
                                                                  1, &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  if (heuristic != CUBLAS_STATUS_SUCCESS || found == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no cuBLASLt block-scaled FP8 algorithm for ", rows, " x ",
                                                      in_features, " -> ", out_features, " (",
                                                      cublasGetStatusName(heuristic), ")"));
  }
  plan->algo = result.algo;
  slot = std::move(plan);
  return slot.get();
}

absl::Status Fp8BlockGemm::Multiply(const uint8_t* a, const float* a_scale, int64_t rows, int64_t in_features,
                                    const uint8_t* w, const float* w_scale, int64_t out_features, uint16_t* d,
                                    int lane, void* stream) {
  EXPERTMESH_RETURN_IF_ERROR(CheckShape(rows, in_features, out_features));
  if (lane < 0 || lane >= kLanes) return absl::InvalidArgumentError("Fp8BlockGemm: bad lane");
  std::lock_guard<std::mutex> lock(mutex_);  // the plan's scale pointers are set per call
  EXPERTMESH_ASSIGN_OR_RETURN(Plan* plan, PlanFor(rows, in_features, out_features, w_scale, a_scale));
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                                     &w_scale, sizeof(w_scale)), "A_SCALE_POINTER"));
  EXPERTMESH_RETURN_IF_ERROR(LtStatus(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                                     &a_scale, sizeof(a_scale)), "B_SCALE_POINTER"));
  const float alpha = 1.0f, beta = 0.0f;
  return LtStatus(cublasLtMatmul(Handle(handle_), plan->desc, &alpha, w, plan->weights, a, plan->activations, &beta, d,
                                 plan->out, d, plan->out, &plan->algo, workspace_[lane].data(), kWorkspaceBytes,
                                 static_cast<cudaStream_t>(stream)),
                  "cublasLtMatmul (block-scaled FP8)");
}

// A rows x 1024 -> 512 product (8 x 4 scale blocks, each scale different) against a float64 host
// reference: catches a cuBLASLt that runs but reads the scales in another order.
absl::Status Fp8BlockGemm::CheckKnownProduct(int64_t rows) {
  constexpr int64_t in = 2 * kFeatureMultiple, out = kFeatureMultiple;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> exponent(4, 9), mantissa(0, 7), sign(0, 1);
  const auto random_code = [&] { return uint8_t(sign(rng) << 7 | exponent(rng) << 3 | mantissa(rng)); };
  std::vector<uint8_t> a(rows * in), w(out * in);
  for (uint8_t& v : a) v = random_code();
  for (uint8_t& v : w) v = random_code();
  std::uniform_real_distribution<float> scale(0.25f, 4.0f);
  std::vector<float> a_scale((in / 128) * rows), w_scale((out / 128) * (in / 128));
  for (float& v : a_scale) v = scale(rng);
  for (float& v : w_scale) v = scale(rng);
  EXPERTMESH_ASSIGN_OR_RETURN(DeviceBuffer a_device, DeviceBuffer::Allocate(a.size()));
  EXPERTMESH_ASSIGN_OR_RETURN(DeviceBuffer w_device, DeviceBuffer::Allocate(w.size()));
  EXPERTMESH_ASSIGN_OR_RETURN(DeviceBuffer a_scale_device, DeviceBuffer::Allocate(a_scale.size() * 4));
  EXPERTMESH_ASSIGN_OR_RETURN(DeviceBuffer w_scale_device, DeviceBuffer::Allocate(w_scale.size() * 4));
  EXPERTMESH_ASSIGN_OR_RETURN(DeviceBuffer d_device, DeviceBuffer::Allocate(rows * out * 2));
  EXPERTMESH_RETURN_IF_ERROR(a_device.CopyFromHost(a.data(), a.size()));
  EXPERTMESH_RETURN_IF_ERROR(w_device.CopyFromHost(w.data(), w.size()));
  EXPERTMESH_RETURN_IF_ERROR(a_scale_device.CopyFromHost(a_scale.data(), a_scale.size() * 4));
  EXPERTMESH_RETURN_IF_ERROR(w_scale_device.CopyFromHost(w_scale.data(), w_scale.size() * 4));
  EXPERTMESH_RETURN_IF_ERROR(Multiply(a_device.as<uint8_t>(), a_scale_device.as<float>(), rows, in,
                                      w_device.as<uint8_t>(), w_scale_device.as<float>(), out,
                                      d_device.as<uint16_t>(), 0, nullptr));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaDeviceSynchronize(), "known FP8 product"));
  std::vector<uint16_t> d(rows * out);
  EXPERTMESH_RETURN_IF_ERROR(d_device.CopyToHost(d.data(), d.size() * 2));
  double error = 0, norm = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0;
      for (int64_t k = 0; k < in; ++k) {
        sum += double(Float8E4M3ToFloat(a[r * in + k])) * a_scale[(k / 128) * rows + r] * Float8E4M3ToFloat(w[o * in + k]) *
               w_scale[(o / 128) * (in / 128) + k / 128];
      }
      const double got = BFloat16ToFloat(d[r * out + o]);
      error += (got - sum) * (got - sum);
      norm += sum * sum;
    }
  }
  const double relative = std::sqrt(error / std::max(norm, 1e-30));
  if (!(relative < 1e-2)) {
    return absl::InternalError(absl::StrCat("known product off by ", relative, " (relative norm)"));
  }
  return absl::OkStatus();
}

}  // namespace expertmesh::cuda
