// StepModel: what the attention tier's BatchScheduler steps — a model whose sequences each keep
// their own state (the latent KV cache) from one step to the next. Two engines implement it: the
// CPU engine (DeepseekModel with a LatentKvCache per sequence, MakeCpuStepModel below) and the GPU
// engine (GpuModel with its paged device cache, attention-svc/gpu_step_model.h). Sequences are
// created, stepped and destroyed on the scheduler's thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "engine/format/model_config.h"
#include "engine/model/deepseek_model.h"

namespace expertmesh::attention_service {

// One sequence's state in a StepModel; destroying it frees the state (cache pages).
class StepSequence {
 public:
  virtual ~StepSequence() = default;
  virtual int64_t length() const = 0;  // positions in its cache
};

struct StepModelInput {
  StepSequence* sequence = nullptr;
  std::span<const int32_t> token_ids;  // new tokens, at least one
};

class StepModel {
 public:
  virtual ~StepModel() = default;
  virtual const ModelConfig& config() const = 0;
  // A new empty sequence; RESOURCE_EXHAUSTED when the engine holds no more.
  virtual absl::StatusOr<std::unique_ptr<StepSequence>> NewSequence() = 0;
  // One step; per input the logits of its last new token ([1, vocab]). On error no sequence
  // changes. `options` carries the expert deadline and the micro-batch count (CPU engine only).
  virtual absl::StatusOr<std::vector<Tensor>> Step(std::span<const StepModelInput> inputs,
                                                   const StepOptions& options) = 0;
};

// The CPU engine: `model` (not owned) must outlive the result.
std::unique_ptr<StepModel> MakeCpuStepModel(const DeepseekModel& model);

}  // namespace expertmesh::attention_service
