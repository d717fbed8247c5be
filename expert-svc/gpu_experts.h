// LoadGpuExperts: expert-svc --device cuda:N. Loads only this shard's routed experts straight from
// the checkpoint into the card's memory (CudaRoutedExperts via LoadCudaRoutedExperts: the stored
// bytes go up as they are, FP8 with its block scales), reporting progress with the device memory
// in use, and says what Describe reports (backend, resident bytes, device memory); and the
// weight-set store's GPU backend for sets built on the host (admin-loaded parents, blends). Built
// only with CUDA (EXPERTMESH_HAS_CUDA).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/format/checkpoint.h"
#include "engine/model/cuda/cuda_routed_experts.h"
#include "engine/model/routed_experts.h"
#include "engine/model/weight_loader.h"
#include "expert-svc/expert_backend.h"

namespace expertmesh::expert_service {

struct GpuExpertsOptions {
  int device = 0;
  // How the experts live on the card: "auto" (as stored: bf16/f16 -> bf16, FP8 -> FP8 with block
  // scales, f32 -> f32), "bf16" (FP8 is dequantized), "fp8" (needs FP8 weights) or "f32".
  std::string format = "auto";
  ExpertFilter expert_filter;  // this shard's experts
  std::function<void(const std::string& line, bool last)> progress;
  ExpertGemmPath gemm_path = ExpertGemmPath::kAuto;  // how the experts' products run (see ParseExpertGemmPath)
  // FP8 experts in prefill-sized batches: activations rounded to FP8 too (W8A8, as DeepSeek-V3's
  // inference does); false keeps them bf16 (weights dequantized). See CudaExpertOptions.
  bool fp8_activations = true;
};

// --gpu_expert_path: "auto", "kernels" (the tensor-core kernels), "cublas_streams",
// "cublas_batched", "few_tokens" (decode batches of at most 4 tokens only) or "cublas_fp8" (FP8
// experts: W8A8 block-scaled GEMMs); INVALID_ARGUMENT otherwise.
absl::StatusOr<ExpertGemmPath> ParseExpertGemmPath(const std::string& name);

struct GpuExperts {
  std::unique_ptr<RoutedExperts> experts;
  uint64_t resident_weight_bytes = 0;  // expert weights (and FP8 scales) on the card
  int64_t expert_count = 0;
  std::string backend;      // Describe's backend: "cuda:0"
  std::string description;  // for the log: "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB; bf16 experts"
};

absl::StatusOr<GpuExperts> LoadGpuExperts(const Checkpoint& checkpoint, const GpuExpertsOptions& options);

// The weight-set store's GPU backend: each weight set's host matrices uploaded into a
// CudaRoutedExperts on device `device` (bf16, or float32 when `float32`), for parents loaded and
// blends built through the admin API. (The served checkpoint itself goes straight to the card
// through LoadGpuExperts.) Equal host tensors shared by several sets are uploaded once per set.
std::unique_ptr<ExpertBackend> MakeCudaExpertBackend(int device, bool float32, int64_t n_routed_experts,
                                                     ExpertGemmPath gemm_path = ExpertGemmPath::kAuto);

}  // namespace expertmesh::expert_service
