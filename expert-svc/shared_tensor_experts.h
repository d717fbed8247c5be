// SharedTensorExperts: the CPU RoutedExperts of a weight set, computing directly on its shared
// host matrices. Same arithmetic, in the same order, as engine/model's LocalRoutedExperts (tokens
// grouped per expert in ascending expert order, one GEMM chain per expert, weighted scatter-add),
// so a shard serves bit-identical outputs whether its weights are owned or shared.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "engine/model/routed_experts.h"
#include "engine/ops/compute_backend.h"
#include "expert-svc/weight_set.h"

namespace expertmesh::expert_service {

class SharedTensorExperts final : public RoutedExperts {
 public:
  // Not owned; `matrices` and `compute` must outlive the object.
  SharedTensorExperts(const ExpertMatrixMap& matrices, int64_t hidden_size, const ops::ComputeBackend& compute);

  // Thread-safe (read-only on the weights).
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override;

 private:
  const ExpertMatrixMap& matrices_;
  int64_t hidden_size_;
  const ops::ComputeBackend& compute_;
};

}  // namespace expertmesh::expert_service
