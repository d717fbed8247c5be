// LoadCudaRoutedExperts: expert plan from the config, raw-byte views, upload, progress.
#include "engine/model/cuda/cuda_expert_loader.h"

#include <cuda_runtime.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/status_macros.h"
#include "engine/model/model_weights.h"

namespace expertmesh {

std::string CudaExpertLoadProgress::ToString() const {
  return absl::StrFormat("loading experts: %d/%d, %.2f GB read, %.2f GB of weights on the GPU (%.2f of %.2f GB in use)",
                         experts_loaded, experts_total, bytes_read / 1e9, device_weight_bytes / 1e9,
                         device_used_bytes / 1e9, device_total_bytes / 1e9);
}

absl::StatusOr<std::unique_ptr<CudaRoutedExperts>> LoadCudaRoutedExperts(const Checkpoint& checkpoint,
                                                                         const CudaExpertLoadOptions& options) {
  const ModelConfig& config = checkpoint.config();
  CudaExpertOptions expert_options;
  expert_options.hidden_size = config.hidden_size;
  expert_options.intermediate_size = config.moe_intermediate_size;
  expert_options.n_routed_experts = config.n_routed_experts;
  expert_options.format = options.format;
  EXPERTMESH_ASSIGN_OR_RETURN(std::unique_ptr<CudaRoutedExperts> experts, CudaRoutedExperts::Create(expert_options));
  std::vector<std::pair<int64_t, int32_t>> plan;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (!config.IsMoeLayer(layer)) continue;
    for (int32_t e = 0; e < config.n_routed_experts; ++e) {
      if (!options.expert_filter || options.expert_filter(layer, e)) plan.emplace_back(layer, e);
    }
  }
  CudaExpertLoadProgress progress;
  progress.experts_total = static_cast<int64_t>(plan.size());
  auto report = [&]() {
    if (!options.progress) return;
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      progress.device_used_bytes = total_bytes - free_bytes;
      progress.device_total_bytes = total_bytes;
    }
    progress.device_weight_bytes = experts->DeviceWeightBytes();
    options.progress(progress);
  };
  report();
  for (const auto& [layer, expert] : plan) {
    const std::vector<WeightSpec> specs = RoutedExpertWeightSpecs(config, layer, expert);  // gate, up, down
    ExpertTensorBytes bytes;
    std::span<const std::byte>* data[3] = {&bytes.gate, &bytes.up, &bytes.down};
    std::span<const std::byte>* scales[3] = {&bytes.gate_scale, &bytes.up_scale, &bytes.down_scale};
    for (int i = 0; i < 3; ++i) {
      const TensorLocation* location = checkpoint.Find(specs[i].name);
      if (location == nullptr) {
        return absl::NotFoundError(absl::StrCat("checkpoint ", checkpoint.directory().string(), " has no tensor ",
                                                specs[i].name));
      }
      if (location->shape != specs[i].shape) {
        return absl::InvalidArgumentError(absl::StrCat("tensor ", specs[i].name, " has shape ",
                                                       FormatShape(location->shape), ", config implies ",
                                                       FormatShape(specs[i].shape)));
      }
      if (i > 0 && location->dtype != bytes.dtype) {
        return absl::InvalidArgumentError(absl::StrCat("tensor ", specs[i].name, " is ",
                                                       std::string(DTypeName(location->dtype)),
                                                       " but the expert's gate_proj is ",
                                                       std::string(DTypeName(bytes.dtype))));
      }
      bytes.dtype = location->dtype;
      EXPERTMESH_ASSIGN_OR_RETURN(*data[i], checkpoint.RawBytes(specs[i].name));
      progress.bytes_read += data[i]->size();
      if (location->dtype == DType::kF8E4M3) {
        const std::string scale_name = specs[i].name + "_scale_inv";
        const TensorLocation* scale = checkpoint.Find(scale_name);
        if (scale == nullptr || scale->dtype != DType::kF32) {
          return absl::InvalidArgumentError(absl::StrCat("FP8 tensor ", specs[i].name, " has no float32 ", scale_name));
        }
        EXPERTMESH_ASSIGN_OR_RETURN(*scales[i], checkpoint.RawBytes(scale_name));
        progress.bytes_read += scales[i]->size();
      }
    }
    EXPERTMESH_RETURN_IF_ERROR(experts->SetExpertFromBytes(layer, expert, bytes));
    ++progress.experts_loaded;
    report();
  }
  return experts;
}

}  // namespace expertmesh
