// LocalRoutedExperts: the in-process RoutedExperts — SwiGLU experts held in memory, per MoE layer
// and expert id. A shard may hold any subset (loaded with an expert filter); asking for an expert
// it does not hold is NOT_FOUND. Compute groups the batch's tokens by expert and runs one GEMM
// chain per expert.
#pragma once

#include <cstdint>
#include <map>
#include <span>

#include "absl/status/status.h"
#include "engine/model/model_weights.h"
#include "engine/model/routed_experts.h"
#include "engine/ops/compute_backend.h"

namespace expertmesh {

class LocalRoutedExperts final : public RoutedExperts {
 public:
  // `backend` must outlive the object.
  LocalRoutedExperts(int64_t hidden_size, int64_t intermediate_size,
                     const ops::ComputeBackend& backend = ops::DefaultCpuBackend());

  // Adds (or replaces) expert `expert` of `layer`; shapes must be [I,H], [I,H], [H,I].
  absl::Status AddExpert(int64_t layer, int32_t expert, MlpWeights weights);
  bool HasExpert(int64_t layer, int32_t expert) const;
  int64_t num_experts() const;
  uint64_t ByteSize() const;

  // Thread-safe (read-only on the weights).
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override;

 private:
  int64_t hidden_size_;
  int64_t intermediate_size_;
  const ops::ComputeBackend& backend_;
  std::map<int64_t, std::map<int32_t, MlpWeights>> experts_;  // layer -> expert -> weights
};

}  // namespace expertmesh
