// WeightSet: one named, versioned set of this shard's routed-expert matrices (a parent
// checkpoint's or a blend's) plus the RoutedExperts that computes with them. Matrices are held as
// shared_ptr<const Tensor>: a blend points at its base parent's tensors wherever its values are the
// base's (kept by the delta rule, or not selected by the recipe's globs), so it costs memory only
// where it differs. A WeightSet is immutable once built; its lifecycle (prepared, ready, retired,
// draining) is kept by the WeightSetStore.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>

#include "engine/core/tensor.h"
#include "engine/model/routed_experts.h"

namespace expertmesh::expert_service {

// The three matrices of one SwiGLU expert.
struct ExpertMatrices {
  std::shared_ptr<const Tensor> gate_proj;  // [intermediate, hidden]
  std::shared_ptr<const Tensor> up_proj;    // [intermediate, hidden]
  std::shared_ptr<const Tensor> down_proj;  // [hidden, intermediate]
};

// layer -> expert id -> matrices.
using ExpertMatrixMap = std::map<int64_t, std::map<int32_t, ExpertMatrices>>;

// Calls `visit` for every matrix of `matrices` (three per expert, layer and expert ascending).
void ForEachMatrix(const ExpertMatrixMap& matrices, const std::function<void(const std::shared_ptr<const Tensor>&)>& visit);
// Float32 bytes of one tensor.
uint64_t TensorBytes(const Tensor& tensor);
// Bytes of every distinct tensor of `matrices` (a tensor used twice counts once).
uint64_t DistinctBytes(const ExpertMatrixMap& matrices);

enum class WeightSetKind { kParent, kBlend };

// What built a set and what it cost.
struct WeightSetOrigin {
  WeightSetKind kind = WeightSetKind::kParent;
  std::string source;       // parent: checkpoint directory; blend: recipe JSON
  std::string base_parent;  // blend: the base parent's name
  int64_t tensors = 0;      // matrices in the set
  int64_t merged = 0;       // blend: matrices computed as sum_i lambda_i W_i
  int64_t shared_with_base = 0;  // blend: matrices pointing at the base parent's storage
};

class WeightSet {
 public:
  // `experts` may be null and attached later (it usually refers to matrices()).
  WeightSet(std::string name, uint64_t version, WeightSetOrigin origin, ExpertMatrixMap matrices,
            std::unique_ptr<RoutedExperts> experts);
  // Sets the RoutedExperts once, before the set is shared.
  void AttachExperts(std::unique_ptr<RoutedExperts> experts) { experts_ = std::move(experts); }

  const std::string& name() const { return name_; }
  uint64_t version() const { return version_; }
  const WeightSetOrigin& origin() const { return origin_; }
  const ExpertMatrixMap& matrices() const { return matrices_; }
  // Thread-safe as RoutedExperts::Compute of the backend that built it.
  RoutedExperts& experts() const { return *experts_; }
  // Bytes of every tensor the set uses (shared ones included).
  uint64_t referenced_bytes() const { return referenced_bytes_; }

  // Requests computing on this set now.
  int64_t requests_in_flight() const { return in_flight_.load(); }

  // Marks one request computing on the set for its lifetime.
  class UseGuard {
   public:
    explicit UseGuard(std::shared_ptr<const WeightSet> set);
    UseGuard(UseGuard&&) noexcept = default;
    UseGuard& operator=(UseGuard&&) noexcept = default;
    ~UseGuard();
    const WeightSet& operator*() const { return *set_; }
    const WeightSet* operator->() const { return set_.get(); }

   private:
    std::shared_ptr<const WeightSet> set_;
  };

 private:
  std::string name_;
  uint64_t version_;
  WeightSetOrigin origin_;
  ExpertMatrixMap matrices_;
  std::unique_ptr<RoutedExperts> experts_;
  uint64_t referenced_bytes_ = 0;
  mutable std::atomic<int64_t> in_flight_{0};
};

}  // namespace expertmesh::expert_service
