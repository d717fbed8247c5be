// Fp8BlockGemm: owns one cuBLASLt handle, a workspace per stream lane and a cache of matmul plans
// for the W8A8 products of FP8 experts: D[rows, out] (bf16) = A[rows, in] (E4M3, one float32 scale
// per row and 128 input values) x W[out, in]^T (E4M3, one scale per 128x128 block: DeepSeek-V3's
// checkpoint layout). Measured on an H100 with cuBLASLt 13.1 (bench/RESULTS.md, run 5): the
// answer is right only with the activation scales block-major, [in/128][rows], and the weight
// scales as stored, [out/128][in/128]; with an input or output block count not a multiple of 4 it
// is silently wrong, and some row counts have no algorithm (37: none; 64, 200, 256: fine) — hence
// the size rules below, and Create finds the smallest row multiple of 16, 32 or 64 that has an
// algorithm and computes a known-values product right. Plain C++ header; `stream` is a cudaStream_t.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "absl/status/statusor.h"
#include "engine/ops/cuda/cuda_device.h"

namespace expertmesh::cuda {

class Fp8BlockGemm {
 public:
  static constexpr int64_t kFeatureMultiple = 512;  // in and out: 4 blocks of 128
  static constexpr int kLanes = 4;                  // concurrent streams (one workspace each)

  // FAILED_PRECONDITION when this cuBLASLt has no block-scaled FP8 matmul or computes a known
  // product wrongly (then callers keep their other path).
  static absl::StatusOr<std::unique_ptr<Fp8BlockGemm>> Create();
  ~Fp8BlockGemm();
  Fp8BlockGemm(const Fp8BlockGemm&) = delete;
  Fp8BlockGemm& operator=(const Fp8BlockGemm&) = delete;

  // Rows of every product are padded to a multiple of this (found at Create).
  int64_t row_multiple() const { return row_multiple_; }
  // OK when in/out % kFeatureMultiple == 0 (and both fit an int).
  static absl::Status CheckFeatures(int64_t in_features, int64_t out_features);
  // That, and rows % row_multiple() == 0.
  absl::Status CheckShape(int64_t rows, int64_t in_features, int64_t out_features) const;

  // d[rows, out] = dequant(a) x dequant(w)^T on `stream` with lane `lane`'s workspace (one lane
  // per concurrently running stream). a_scale: [in/128][rows]; w_scale: [out/128][in/128].
  absl::Status Multiply(const uint8_t* a, const float* a_scale, int64_t rows, int64_t in_features,
                        const uint8_t* w, const float* w_scale, int64_t out_features, uint16_t* d, int lane,
                        void* stream);

 private:
  Fp8BlockGemm() = default;
  struct Plan;
  // The plan of a shape, its algorithm chosen with these scale pointers set (cuBLASLt's heuristic
  // rejects block-scaled descriptors without them).
  absl::StatusOr<Plan*> PlanFor(int64_t rows, int64_t in_features, int64_t out_features, const float* w_scale,
                                const float* a_scale);
  absl::Status CheckKnownProduct(int64_t rows);

  int64_t row_multiple_ = 0;
  void* handle_ = nullptr;  // cublasLtHandle_t
  DeviceBuffer workspace_[kLanes];
  std::mutex mutex_;  // guards plans_
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> plans_;
};

}  // namespace expertmesh::cuda
