// Loading a model from a Checkpoint: the non-expert ModelWeights and the routed experts (all,
// none, or those an expert filter selects, so a shard loads only its own), each tensor checked
// against the shape the config implies, with a progress callback. LoadModelFromDirectory ties it
// together for the CLI and tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/format/checkpoint.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/local_routed_experts.h"
#include "engine/model/model_weights.h"

namespace expertmesh {

struct LoadProgress {
  int64_t tensors_loaded = 0;
  int64_t tensors_total = 0;
  uint64_t bytes_loaded = 0;  // float32 bytes in memory
  // "loading weights: 37/120 tensors, 12.3 MB"
  std::string ToString() const;
};
using LoadProgressCallback = std::function<void(const LoadProgress&)>;

// Which routed experts to load: true for (layer, expert) to hold.
using ExpertFilter = std::function<bool(int64_t layer, int32_t expert)>;

struct LoadOptions {
  bool load_non_expert_weights = true;  // false: experts only (an expert shard)
  bool load_routed_experts = true;      // false: attention-svc (everything but routed experts)
  ExpertFilter expert_filter;           // null: every expert
  LoadProgressCallback progress;
};

struct LoadedWeights {
  ModelWeights weights;                               // empty if !load_non_expert_weights
  std::unique_ptr<LocalRoutedExperts> routed_experts; // null if !load_routed_experts
};

// Tensor names a LoadOptions needs, for Checkpoint::Open's name filter.
std::function<bool(const std::string&)> CheckpointNameFilter(const LoadOptions& options);

absl::StatusOr<LoadedWeights> LoadWeights(const Checkpoint& checkpoint, const LoadOptions& options);

// A ready-to-run in-process model (weights and local experts owned here).
struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<LocalRoutedExperts> routed_experts;
  std::unique_ptr<DeepseekModel> model;  // refers to routed_experts: keep them together
};

absl::StatusOr<LoadedModel> LoadModelFromDirectory(const std::filesystem::path& directory,
                                                   const ModelOptions& model_options = {},
                                                   const LoadProgressCallback& progress = nullptr);

}  // namespace expertmesh
