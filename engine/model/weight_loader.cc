// LoadWeights / LoadModelFromDirectory: load plan, shape-checked loads, progress reporting.
#include "engine/model/weight_loader.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/status_macros.h"

namespace expertmesh {
namespace {

struct PlannedTensor {
  WeightSpec spec;
  Tensor* destination;
};

absl::Status LoadPlanned(const Checkpoint& checkpoint, std::vector<PlannedTensor>& plan,
                         const LoadProgressCallback& progress) {
  LoadProgress state;
  state.tensors_total = static_cast<int64_t>(plan.size());
  if (progress) progress(state);
  for (PlannedTensor& item : plan) {
    absl::StatusOr<Tensor> tensor = checkpoint.LoadFloat(item.spec.name, &item.spec.shape);
    if (!tensor.ok()) {
      return absl::Status(tensor.status().code(),
                          absl::StrCat("loading ", item.spec.name, " (config implies shape ",
                                       FormatShape(item.spec.shape), ") from ", checkpoint.directory().string(),
                                       ": ", tensor.status().message()));
    }
    if (tensor->shape() != item.spec.shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", item.spec.name, " has shape ", tensor->ShapeString(),
                                                     ", config implies ", FormatShape(item.spec.shape)));
    }
    *item.destination = *std::move(tensor);
    ++state.tensors_loaded;
    state.bytes_loaded += item.destination->size() * sizeof(float);
    if (progress) progress(state);
  }
  return absl::OkStatus();
}

}  // namespace

std::string LoadProgress::ToString() const {
  return absl::StrFormat("loading weights: %d/%d tensors, %.1f MB", tensors_loaded, tensors_total,
                         static_cast<double>(bytes_loaded) / 1e6);
}

std::function<bool(const std::string&)> CheckpointNameFilter(const LoadOptions& options) {
  return [options](const std::string& name) {
    const size_t experts_at = name.find(".mlp.experts.");
    if (experts_at == std::string::npos) return options.load_non_expert_weights;
    if (!options.load_routed_experts) return false;
    if (!options.expert_filter) return true;
    // model.layers.<L>.mlp.experts.<E>.<...>
    constexpr std::string_view kLayers = "model.layers.";
    int64_t layer = 0, expert = 0;
    const std::string_view layer_text =
        std::string_view(name).substr(kLayers.size(), experts_at - kLayers.size());
    std::string_view rest = std::string_view(name).substr(experts_at + 13);
    rest = rest.substr(0, rest.find('.'));
    if (!absl::SimpleAtoi(absl::string_view(layer_text.data(), layer_text.size()), &layer) ||
        !absl::SimpleAtoi(absl::string_view(rest.data(), rest.size()), &expert)) return true;
    return options.expert_filter(layer, static_cast<int32_t>(expert));
  };
}

absl::StatusOr<LoadedWeights> LoadWeights(const Checkpoint& checkpoint, const LoadOptions& options) {
  const ModelConfig& config = checkpoint.config();
  LoadedWeights loaded;
  std::vector<PlannedTensor> plan;
  if (options.load_non_expert_weights) {
    EXPERTMESH_ASSIGN_OR_RETURN(std::vector<WeightSpec> specs, NonExpertWeightSpecs(config));
    loaded.weights.layers.resize(config.num_hidden_layers);
    for (WeightSpec& spec : specs) {
      Tensor* slot = FindWeightSlot(loaded.weights, config, spec.name);
      if (slot == nullptr) return absl::InternalError(absl::StrCat("no slot for weight ", spec.name));
      plan.push_back({std::move(spec), slot});
    }
  }
  // Routed experts are loaded into MlpWeights first and handed to LocalRoutedExperts afterwards.
  struct ExpertSlot {
    int64_t layer;
    int32_t expert;
    MlpWeights weights;
  };
  std::vector<ExpertSlot> expert_slots;
  if (options.load_routed_experts) {
    EXPERTMESH_RETURN_IF_ERROR(ValidateConfigForModel(config));
    for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
      if (!config.IsMoeLayer(layer)) continue;
      for (int32_t expert = 0; expert < config.n_routed_experts; ++expert) {
        if (options.expert_filter && !options.expert_filter(layer, expert)) continue;
        expert_slots.push_back({layer, expert, {}});
      }
    }
    for (ExpertSlot& slot : expert_slots) {
      std::vector<WeightSpec> specs = RoutedExpertWeightSpecs(config, slot.layer, slot.expert);
      plan.push_back({std::move(specs[0]), &slot.weights.gate_proj});
      plan.push_back({std::move(specs[1]), &slot.weights.up_proj});
      plan.push_back({std::move(specs[2]), &slot.weights.down_proj});
    }
  }
  EXPERTMESH_RETURN_IF_ERROR(LoadPlanned(checkpoint, plan, options.progress));
  if (options.load_routed_experts) {
    loaded.routed_experts = std::make_unique<LocalRoutedExperts>(config.hidden_size, config.moe_intermediate_size);
    for (ExpertSlot& slot : expert_slots) {
      EXPERTMESH_RETURN_IF_ERROR(loaded.routed_experts->AddExpert(slot.layer, slot.expert, std::move(slot.weights)));
    }
  }
  return loaded;
}

absl::StatusOr<LoadedModel> LoadModelFromDirectory(const std::filesystem::path& directory,
                                                   const ModelOptions& model_options,
                                                   const LoadProgressCallback& progress) {
  LoadOptions options;
  options.progress = progress;
  EXPERTMESH_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint,
                              Checkpoint::Open(directory, CheckpointNameFilter(options)));
  EXPERTMESH_ASSIGN_OR_RETURN(LoadedWeights weights, LoadWeights(*checkpoint, options));
  LoadedModel loaded;
  loaded.config = checkpoint->config();
  loaded.routed_experts = std::move(weights.routed_experts);
  EXPERTMESH_ASSIGN_OR_RETURN(loaded.model, DeepseekModel::Create(loaded.config, std::move(weights.weights),
                                                                  loaded.routed_experts.get(), model_options));
  return loaded;
}

}  // namespace expertmesh
