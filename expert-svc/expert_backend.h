// ExpertBackend: the seam between the backend-agnostic weight-set store and where experts run.
// The store builds a set's matrices on the host (shared_ptr<const Tensor>, shared between sets
// wherever values are equal) and asks the backend once per set for the RoutedExperts that
// computes with them; that object lives exactly as long as the set. The CPU backend computes
// directly on the shared host tensors (the reference); a GPU backend uploads them and may keep
// one device copy per distinct host tensor (equal pointers are equal values).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/routed_experts.h"
#include "engine/ops/compute_backend.h"
#include "expert-svc/weight_set.h"

namespace expertmesh::expert_service {

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;
  // Describe's backend name: "cpu", "cuda:0".
  virtual std::string name() const = 0;
  // The RoutedExperts for one weight set. `matrices` stays alive (owned by the set) as long as
  // the returned object; shapes are [I,H], [I,H], [H,I] with H = hidden_size,
  // I = intermediate_size (checked by the store before the call).
  virtual absl::StatusOr<std::unique_ptr<RoutedExperts>> Build(const ExpertMatrixMap& matrices, int64_t hidden_size,
                                                               int64_t intermediate_size) = 0;
};

// The CPU reference: SharedTensorExperts over the host tensors. `compute` must outlive it.
std::unique_ptr<ExpertBackend> MakeCpuExpertBackend(const ops::ComputeBackend& compute = ops::DefaultCpuBackend());

}  // namespace expertmesh::expert_service
