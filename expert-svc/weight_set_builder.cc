// Parent loading and blend merging for one shard's experts, with progress, cancellation and
// budget reservations.
#include "expert-svc/weight_set_builder.h"

#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/status_macros.h"
#include "engine/model/model_weights.h"
#include "engine/model/weight_loader.h"

namespace expertmesh::expert_service {
namespace {

constexpr const char* kMatrixNames[3] = {"gate_proj", "up_proj", "down_proj"};

std::string MatrixName(int64_t layer, int32_t expert, int matrix) {
  return absl::StrCat("model.layers.", layer, ".mlp.experts.", expert, ".", kMatrixNames[matrix], ".weight");
}

std::shared_ptr<const Tensor>& Slot(ExpertMatrices& expert, int matrix) {
  return matrix == 0 ? expert.gate_proj : matrix == 1 ? expert.up_proj : expert.down_proj;
}

absl::Status Reserve(const BuildControl& control, uint64_t bytes) {
  return control.reserve ? control.reserve(bytes) : absl::OkStatus();
}

absl::Status CheckStop(const BuildControl& control, const std::string& what) {
  if (control.stop.stop_requested()) return absl::CancelledError(absl::StrCat(what, " cancelled"));
  return absl::OkStatus();
}

}  // namespace

std::string BuildProgress::ToString() const {
  std::string line = absl::StrFormat("%s: %d/%d tensors (%.1f/%.1f MB)", blend ? "merging" : "loading", tensors_done,
                                     tensors_total, static_cast<double>(bytes_done) / 1e6,
                                     static_cast<double>(bytes_total) / 1e6);
  if (blend) absl::StrAppend(&line, ": ", merged, " merged, ", shared_with_base, " shared with base");
  return line;
}

std::vector<std::string> ShardExpertTensorNames(const HostedExperts& hosted) {
  std::vector<std::string> names;
  for (const auto& [layer, experts] : hosted) {
    for (int32_t expert : experts) {
      for (int matrix = 0; matrix < 3; ++matrix) names.push_back(MatrixName(layer, expert, matrix));
    }
  }
  return names;
}

std::function<bool(const std::string&)> ShardTensorFilter(const HostedExperts& hosted) {
  LoadOptions options;
  options.load_non_expert_weights = false;
  options.load_routed_experts = true;
  options.expert_filter = [hosted](int64_t layer, int32_t expert) {
    auto entry = hosted.find(layer);
    return entry != hosted.end() && entry->second.contains(expert);
  };
  return CheckpointNameFilter(options);
}

absl::Status CheckExpertLayout(const ModelConfig& candidate, const ModelConfig& shard_model, const std::string& what) {
#define EXPERTMESH_CHECK_FIELD(field)                                                                             \
  if (!(candidate.field == shard_model.field)) {                                                                  \
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", #field, " = ", candidate.field,                 \
                                                   ", the served model has ", shard_model.field,                  \
                                                   " (expert shapes and placement must match)"));                 \
  }
  EXPERTMESH_CHECK_FIELD(hidden_size)
  EXPERTMESH_CHECK_FIELD(moe_intermediate_size)
  EXPERTMESH_CHECK_FIELD(n_routed_experts)
  EXPERTMESH_CHECK_FIELD(num_hidden_layers)
  EXPERTMESH_CHECK_FIELD(first_k_dense_replace)
  EXPERTMESH_CHECK_FIELD(moe_layer_freq)
#undef EXPERTMESH_CHECK_FIELD
  return absl::OkStatus();
}

uint64_t HostedMatrixBytes(const ModelConfig& config, const HostedExperts& hosted) {
  uint64_t experts = 0;
  for (const auto& [layer, ids] : hosted) experts += ids.size();
  return experts * 3 * static_cast<uint64_t>(config.hidden_size) * config.moe_intermediate_size * sizeof(float);
}

absl::StatusOr<ExpertMatrixMap> LoadParentMatrices(const Checkpoint& checkpoint, const HostedExperts& hosted,
                                                   const BuildControl& control) {
  const ModelConfig& config = checkpoint.config();
  BuildProgress progress;
  for (const auto& [layer, experts] : hosted) progress.tensors_total += 3 * static_cast<int64_t>(experts.size());
  progress.bytes_total = HostedMatrixBytes(config, hosted);
  if (control.progress) control.progress(progress);
  ExpertMatrixMap matrices;
  for (const auto& [layer, experts] : hosted) {
    for (int32_t expert : experts) {
      const std::vector<WeightSpec> specs = RoutedExpertWeightSpecs(config, layer, expert);
      ExpertMatrices& slot = matrices[layer][expert];
      for (int matrix = 0; matrix < 3; ++matrix) {
        const WeightSpec& spec = specs[matrix];
        EXPERTMESH_RETURN_IF_ERROR(CheckStop(control, absl::StrCat("loading ", checkpoint.directory().string())));
        EXPERTMESH_RETURN_IF_ERROR(Reserve(control, static_cast<uint64_t>(ShapeElementCount(spec.shape)) * sizeof(float)));
        absl::StatusOr<Tensor> tensor = checkpoint.LoadFloat(spec.name, &spec.shape);
        if (!tensor.ok()) {
          return absl::Status(tensor.status().code(),
                              absl::StrCat("loading ", spec.name, " (config implies shape ", FormatShape(spec.shape),
                                           ") from ", checkpoint.directory().string(), ": ", tensor.status().message()));
        }
        progress.bytes_done += TensorBytes(*tensor);
        Slot(slot, matrix) = std::make_shared<const Tensor>(*std::move(tensor));
        ++progress.tensors_done;
        if (control.progress) control.progress(progress);
      }
    }
  }
  return matrices;
}

absl::StatusOr<BlendMatrices> MergeBlendMatrices(const TensorMerger& merger, const ExpertMatrixMap& base,
                                                 const HostedExperts& hosted, const BuildControl& control) {
  BuildProgress progress;
  progress.blend = true;
  for (const auto& [layer, experts] : hosted) {
    for (int32_t expert : experts) {
      auto layer_entry = base.find(layer);
      if (layer_entry == base.end() || !layer_entry->second.contains(expert)) {
        return absl::InternalError(absl::StrCat("base parent lacks expert ", expert, " of layer ", layer));
      }
      const ExpertMatrices& m = layer_entry->second.at(expert);
      progress.tensors_total += 3;
      progress.bytes_total += TensorBytes(*m.gate_proj) + TensorBytes(*m.up_proj) + TensorBytes(*m.down_proj);
    }
  }
  if (control.progress) control.progress(progress);
  const std::string& blend = merger.recipe().name;
  BlendMatrices result;
  for (const auto& [layer, experts] : hosted) {
    for (int32_t expert : experts) {
      const ExpertMatrices& base_expert = base.at(layer).at(expert);
      ExpertMatrices& slot = result.matrices[layer][expert];
      for (int matrix = 0; matrix < 3; ++matrix) {
        const std::string name = MatrixName(layer, expert, matrix);
        const std::shared_ptr<const Tensor>& base_tensor =
            matrix == 0 ? base_expert.gate_proj : matrix == 1 ? base_expert.up_proj : base_expert.down_proj;
        EXPERTMESH_RETURN_IF_ERROR(CheckStop(control, absl::StrCat("merging '", blend, "'")));
        const OutputTensorSpec* spec = merger.FindOutput(name);
        if (spec == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat("blend '", blend, "': the base parent's checkpoint has no tensor ", name));
        }
        if (spec->shape != base_tensor->shape()) {
          return absl::InvalidArgumentError(absl::StrCat("blend '", blend, "': tensor ", name, " has shape ",
                                                         FormatShape(spec->shape), " in the base checkpoint but ",
                                                         base_tensor->ShapeString(), " resident"));
        }
        std::shared_ptr<const Tensor> tensor;
        if (!spec->selected) {
          tensor = base_tensor;  // copied: the base's stored values, which the resident tensor holds
        } else {
          EXPERTMESH_ASSIGN_OR_RETURN(MergedTensor merged, merger.Merge(name, control.stop));
          EXPERTMESH_ASSIGN_OR_RETURN(Tensor values, merged.ToFloat());
          const bool same_as_base =
              merged.kept_from_base() && values.size() == base_tensor->size() &&
              std::memcmp(values.data(), base_tensor->data(), static_cast<size_t>(values.size()) * sizeof(float)) == 0;
          if (same_as_base) {
            tensor = base_tensor;
          } else {
            EXPERTMESH_RETURN_IF_ERROR(Reserve(control, TensorBytes(values)));
            tensor = std::make_shared<const Tensor>(std::move(values));
            ++result.merged;
          }
        }
        if (tensor == base_tensor) ++result.shared_with_base;
        progress.bytes_done += TensorBytes(*tensor);
        Slot(slot, matrix) = std::move(tensor);
        ++progress.tensors_done;
        progress.merged = result.merged;
        progress.shared_with_base = result.shared_with_base;
        if (control.progress) control.progress(progress);
      }
    }
  }
  return result;
}

std::string CheckpointFingerprint(const Checkpoint& checkpoint) {
  std::set<std::filesystem::path> files;
  for (const std::string& name : checkpoint.TensorNames()) {
    if (const TensorLocation* location = checkpoint.Find(name)) files.insert(location->file);
  }
  std::string fingerprint;
  for (const auto& file : files) {
    std::error_code error;
    const auto size = std::filesystem::file_size(file, error);
    const auto modified = std::filesystem::last_write_time(file, error);
    absl::StrAppend(&fingerprint, file.string(), ":", error ? 0 : size, ":",
                    error ? 0 : modified.time_since_epoch().count(), ";");
  }
  return fingerprint;
}

}  // namespace expertmesh::expert_service
