// StepModel over the CPU engine: a LatentKvCache per sequence, DeepseekModel::Step per step.
#include "attention-svc/step_model.h"

#include <utility>

namespace expertmesh::attention_service {
namespace {

class CpuStepSequence final : public StepSequence {
 public:
  explicit CpuStepSequence(LatentKvCache cache) : cache_(std::move(cache)) {}
  int64_t length() const override { return cache_.length(); }
  LatentKvCache& cache() { return cache_; }

 private:
  LatentKvCache cache_;
};

class CpuStepModel final : public StepModel {
 public:
  explicit CpuStepModel(const DeepseekModel& model) : model_(model) {}
  const ModelConfig& config() const override { return model_.config(); }

  absl::StatusOr<std::unique_ptr<StepSequence>> NewSequence() override {
    return std::make_unique<CpuStepSequence>(model_.NewCache());
  }

  absl::StatusOr<std::vector<Tensor>> Step(std::span<const StepModelInput> inputs,
                                           const StepOptions& options) override {
    std::vector<SequenceInput> sequences;
    sequences.reserve(inputs.size());
    for (const StepModelInput& input : inputs) {
      SequenceInput sequence;
      sequence.cache = &static_cast<CpuStepSequence*>(input.sequence)->cache();
      sequence.token_ids = input.token_ids;
      sequences.push_back(sequence);
    }
    return model_.Step(sequences, options);
  }

 private:
  const DeepseekModel& model_;
};

}  // namespace

std::unique_ptr<StepModel> MakeCpuStepModel(const DeepseekModel& model) {
  return std::make_unique<CpuStepModel>(model);
}

}  // namespace expertmesh::attention_service
