// WeightSet: byte accounting over shared tensors and the in-flight guard.
#include "expert-svc/weight_set.h"

#include <utility>

namespace expertmesh::expert_service {

void ForEachMatrix(const ExpertMatrixMap& matrices,
                   const std::function<void(const std::shared_ptr<const Tensor>&)>& visit) {
  for (const auto& [layer, experts] : matrices) {
    for (const auto& [expert, m] : experts) {
      visit(m.gate_proj);
      visit(m.up_proj);
      visit(m.down_proj);
    }
  }
}

uint64_t TensorBytes(const Tensor& tensor) { return static_cast<uint64_t>(tensor.size()) * sizeof(float); }

uint64_t DistinctBytes(const ExpertMatrixMap& matrices) {
  std::unordered_set<const Tensor*> seen;
  uint64_t bytes = 0;
  ForEachMatrix(matrices, [&](const std::shared_ptr<const Tensor>& tensor) {
    if (tensor && seen.insert(tensor.get()).second) bytes += TensorBytes(*tensor);
  });
  return bytes;
}

WeightSet::WeightSet(std::string name, uint64_t version, WeightSetOrigin origin, ExpertMatrixMap matrices,
                     std::unique_ptr<RoutedExperts> experts)
    : name_(std::move(name)),
      version_(version),
      origin_(std::move(origin)),
      matrices_(std::move(matrices)),
      experts_(std::move(experts)) {
  ForEachMatrix(matrices_, [&](const std::shared_ptr<const Tensor>& tensor) {
    if (tensor) referenced_bytes_ += TensorBytes(*tensor);
  });
}

WeightSet::UseGuard::UseGuard(std::shared_ptr<const WeightSet> set) : set_(std::move(set)) {
  if (set_) ++set_->in_flight_;
}

WeightSet::UseGuard::~UseGuard() {
  if (set_) --set_->in_flight_;
}

}  // namespace expertmesh::expert_service
