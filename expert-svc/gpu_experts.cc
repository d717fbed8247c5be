// expert-svc's GPU backend: format choice, LoadCudaRoutedExperts with progress, device memory.
#include "expert-svc/gpu_experts.h"

#include <chrono>
#include <span>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/model/cuda/cuda_expert_loader.h"
#include "engine/model/model_weights.h"
#include "engine/ops/cuda/cuda_device.h"

namespace expertmesh::expert_service {
namespace {

// The stored dtype of the first hosted expert's down_proj (all experts share one dtype).
absl::StatusOr<DType> StoredExpertDType(const Checkpoint& checkpoint, const ExpertFilter& filter) {
  const ModelConfig& config = checkpoint.config();
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (!config.IsMoeLayer(layer)) continue;
    for (int32_t expert = 0; expert < config.n_routed_experts; ++expert) {
      if (filter && !filter(layer, expert)) continue;
      const TensorLocation* location = checkpoint.Find(RoutedExpertWeightSpecs(config, layer, expert)[2].name);
      if (location != nullptr) return location->dtype;
    }
  }
  return absl::NotFoundError("the checkpoint holds none of this shard's experts");
}

absl::StatusOr<GpuExpertFormat> ChooseFormat(const std::string& requested, DType stored) {
  if (requested == "bf16") return GpuExpertFormat::kBF16;
  if (requested == "f32") return GpuExpertFormat::kF32;
  if (requested == "fp8") {
    if (stored != DType::kF8E4M3) {
      return absl::InvalidArgumentError(absl::StrCat("--gpu-expert-format=fp8 needs FP8 experts; the checkpoint stores ",
                                                     std::string(DTypeName(stored))));
    }
    return GpuExpertFormat::kFP8Block;
  }
  if (requested != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-expert-format must be auto, bf16, fp8 or f32, got \"", requested, "\""));
  }
  switch (stored) {
    case DType::kF8E4M3: return GpuExpertFormat::kFP8Block;
    case DType::kF32: return GpuExpertFormat::kF32;
    default: return GpuExpertFormat::kBF16;
  }
}

const char* FormatName(GpuExpertFormat format) {
  switch (format) {
    case GpuExpertFormat::kF32: return "f32";
    case GpuExpertFormat::kBF16: return "bf16";
    case GpuExpertFormat::kFP8Block: return "fp8-e4m3 block-scaled";
  }
  return "?";
}

}  // namespace

namespace {

class CudaExpertBackend final : public ExpertBackend {
 public:
  CudaExpertBackend(int device, bool float32, int64_t n_routed_experts, ExpertGemmPath gemm_path)
      : device_(device), float32_(float32), n_routed_experts_(n_routed_experts), gemm_path_(gemm_path) {}
  std::string name() const override { return absl::StrCat("cuda:", device_); }

  absl::StatusOr<std::unique_ptr<RoutedExperts>> Build(const ExpertMatrixMap& matrices, int64_t hidden_size,
                                                       int64_t intermediate_size) override {
    EXPERTMESH_RETURN_IF_ERROR(cuda::UseDevice(device_));
    CudaExpertOptions options;
    options.hidden_size = hidden_size;
    options.intermediate_size = intermediate_size;
    options.n_routed_experts = n_routed_experts_;
    options.format = float32_ ? GpuExpertFormat::kF32 : GpuExpertFormat::kBF16;
    options.path = gemm_path_;
    EXPERTMESH_ASSIGN_OR_RETURN(std::unique_ptr<CudaRoutedExperts> experts, CudaRoutedExperts::Create(options));
    auto bytes_of = [](const std::shared_ptr<const Tensor>& tensor) {
      return std::as_bytes(std::span<const float>(tensor->data(), tensor->size()));
    };
    for (const auto& [layer, experts_of_layer] : matrices) {
      for (const auto& [expert, mlp] : experts_of_layer) {
        ExpertTensorBytes bytes;
        bytes.dtype = DType::kF32;
        bytes.gate = bytes_of(mlp.gate_proj);
        bytes.up = bytes_of(mlp.up_proj);
        bytes.down = bytes_of(mlp.down_proj);
        EXPERTMESH_RETURN_IF_ERROR(experts->SetExpertFromBytes(layer, expert, bytes));
      }
    }
    return std::unique_ptr<RoutedExperts>(std::move(experts));
  }

 private:
  const int device_;
  const bool float32_;
  const int64_t n_routed_experts_;
  const ExpertGemmPath gemm_path_;
};

}  // namespace

std::unique_ptr<ExpertBackend> MakeCudaExpertBackend(int device, bool float32, int64_t n_routed_experts,
                                                     ExpertGemmPath gemm_path) {
  return std::make_unique<CudaExpertBackend>(device, float32, n_routed_experts, gemm_path);
}

absl::StatusOr<ExpertGemmPath> ParseExpertGemmPath(const std::string& name) {
  if (name == "auto") return ExpertGemmPath::kAuto;
  if (name == "kernels") return ExpertGemmPath::kDirect;
  if (name == "cublas_streams") return ExpertGemmPath::kCublasStreams;
  if (name == "cublas_batched") return ExpertGemmPath::kCublasBatched;
  if (name == "few_tokens") return ExpertGemmPath::kFewTokens;
  if (name == "cublas_fp8") return ExpertGemmPath::kCublasFp8;
  return absl::InvalidArgumentError(absl::StrCat("unknown GPU expert path '", name,
                                                 "' (auto, kernels, cublas_streams, cublas_batched, few_tokens or "
                                                 "cublas_fp8)"));
}

absl::StatusOr<GpuExperts> LoadGpuExperts(const Checkpoint& checkpoint, const GpuExpertsOptions& options) {
  EXPERTMESH_RETURN_IF_ERROR(cuda::UseDevice(options.device));
  EXPERTMESH_ASSIGN_OR_RETURN(const std::string device_name, cuda::DescribeDevice(options.device));
  EXPERTMESH_ASSIGN_OR_RETURN(const DType stored, StoredExpertDType(checkpoint, options.expert_filter));
  EXPERTMESH_ASSIGN_OR_RETURN(const GpuExpertFormat format, ChooseFormat(options.format, stored));
  CudaExpertLoadOptions load;
  load.format = format;
  load.expert_filter = options.expert_filter;
  auto last_report = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  load.progress = [&](const CudaExpertLoadProgress& progress) {
    if (!options.progress) return;
    const bool last = progress.experts_loaded == progress.experts_total;
    const auto now = std::chrono::steady_clock::now();
    if (!last && now - last_report < std::chrono::seconds(1)) return;
    last_report = now;
    options.progress(progress.ToString(), last);
  };
  EXPERTMESH_ASSIGN_OR_RETURN(std::unique_ptr<CudaRoutedExperts> experts, LoadCudaRoutedExperts(checkpoint, load));
  experts->set_path(options.gemm_path);
  experts->set_fp8_activations(options.fp8_activations);
  GpuExperts result;
  result.resident_weight_bytes = experts->DeviceWeightBytes();
  result.expert_count = experts->num_experts();
  result.backend = absl::StrCat("cuda:", options.device);
  result.description = absl::StrCat(device_name, "; ", FormatName(format), " experts");
  result.experts = std::move(experts);
  return result;
}

}  // namespace expertmesh::expert_service
