// GpuStepModel: the attention tier's StepModel on one GPU (attention-svc --device cuda:N). It owns
// a GpuModel holding the non-expert weights, the paged latent KV cache and the step scratch on
// the card; the routed experts stay behind the RoutedExperts it is given (the gRPC fan-out to the
// expert shards), reached with one pinned copy each way per MoE layer. Built only with CUDA.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "attention-svc/step_model.h"
#include "engine/model/cuda/gpu_model.h"
#include "engine/model/model_weights.h"
#include "engine/model/routed_experts.h"

namespace expertmesh::attention_service {

struct GpuStepModelOptions {
  int device = 0;           // CUDA device ordinal
  bool float32 = false;     // float32 weights (fidelity mode) instead of bf16
  int64_t max_sequences = 64;
  int64_t max_sequence_length = 4096;  // positions per sequence (cache reserved up front)
  int64_t max_step_tokens = 2048;
  int64_t skinny_linear_rows = 0;      // GpuModelOptions::decode_linear_max_rows
  bool split_decode_attention = true;  // GpuModelOptions::split_decode_attention
};

struct GpuStepModel {
  std::unique_ptr<StepModel> model;
  uint64_t weight_bytes = 0;  // non-expert weights on the card
  uint64_t cache_bytes = 0;   // the paged latent cache, reserved up front
  std::string device_name;    // "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB"
};

// Uploads `weights` (the host copies may be freed afterwards). `routed_experts` (not owned) must
// outlive the result.
absl::StatusOr<GpuStepModel> MakeGpuStepModel(const ModelConfig& config, const ModelWeights& weights,
                                              RoutedExperts* routed_experts, const GpuStepModelOptions& options);

}  // namespace expertmesh::attention_service
