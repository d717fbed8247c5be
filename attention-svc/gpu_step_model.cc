// StepModel over GpuModel: a GPU sequence per StepSequence, Step with the expert deadline.
#include "attention-svc/gpu_step_model.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/ops/cuda/cuda_device.h"

namespace expertmesh::attention_service {
namespace {

class GpuStepSequence final : public StepSequence {
 public:
  GpuStepSequence(GpuModel& model, int64_t id) : model_(model), id_(id) {}
  ~GpuStepSequence() override { model_.ReleaseSequence(id_); }
  int64_t length() const override { return model_.SequenceLength(id_); }
  int64_t id() const { return id_; }

 private:
  GpuModel& model_;
  const int64_t id_;
};

class GpuModelStepper final : public StepModel {
 public:
  explicit GpuModelStepper(std::unique_ptr<GpuModel> model) : model_(std::move(model)) {}
  const ModelConfig& config() const override { return model_->config(); }

  absl::StatusOr<std::unique_ptr<StepSequence>> NewSequence() override {
    EXPERTMESH_ASSIGN_OR_RETURN(const int64_t id, model_->NewSequence());
    return std::make_unique<GpuStepSequence>(*model_, id);
  }

  absl::StatusOr<std::vector<Tensor>> Step(std::span<const StepModelInput> inputs,
                                           const StepOptions& options) override {
    std::vector<GpuSequenceInput> sequences;
    sequences.reserve(inputs.size());
    for (const StepModelInput& input : inputs) {
      sequences.push_back({static_cast<GpuStepSequence*>(input.sequence)->id(), input.token_ids, false});
    }
    return model_->Step(sequences, options);
  }

 private:
  std::unique_ptr<GpuModel> model_;
};

}  // namespace

absl::StatusOr<GpuStepModel> MakeGpuStepModel(const ModelConfig& config, const ModelWeights& weights,
                                              RoutedExperts* routed_experts, const GpuStepModelOptions& options) {
  EXPERTMESH_RETURN_IF_ERROR(cuda::UseDevice(options.device));
  GpuModelOptions model_options;
  model_options.weight_type = options.float32 ? cuda::ElementType::kF32 : cuda::ElementType::kBF16;
  model_options.max_sequences = options.max_sequences;
  model_options.max_sequence_length = options.max_sequence_length;
  model_options.max_step_tokens = options.max_step_tokens;
  model_options.max_logit_rows = std::min<int64_t>(256, options.max_step_tokens);
  model_options.decode_linear_max_rows = options.skinny_linear_rows;
  model_options.split_decode_attention = options.split_decode_attention;
  EXPERTMESH_ASSIGN_OR_RETURN(std::unique_ptr<GpuModel> model,
                              GpuModel::Create(config, weights, routed_experts, model_options));
  GpuStepModel result;
  result.weight_bytes = model->DeviceWeightBytes();
  result.cache_bytes = model->DeviceCacheBytes();
  EXPERTMESH_ASSIGN_OR_RETURN(result.device_name, cuda::DescribeDevice(options.device));
  result.model = std::make_unique<GpuModelStepper>(std::move(model));
  return result;
}

}  // namespace expertmesh::attention_service
