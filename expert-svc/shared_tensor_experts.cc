// SharedTensorExperts: validation, token grouping per expert, SwiGLU on shared tensors, scatter-add.
#include "expert-svc/shared_tensor_experts.h"

#include <cmath>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "expert-svc/expert_backend.h"

namespace expertmesh::expert_service {
namespace {

class CpuExpertBackend final : public ExpertBackend {
 public:
  explicit CpuExpertBackend(const ops::ComputeBackend& compute) : compute_(compute) {}
  std::string name() const override { return "cpu"; }
  absl::StatusOr<std::unique_ptr<RoutedExperts>> Build(const ExpertMatrixMap& matrices, int64_t hidden_size,
                                                       int64_t) override {
    return std::make_unique<SharedTensorExperts>(matrices, hidden_size, compute_);
  }

 private:
  const ops::ComputeBackend& compute_;
};

}  // namespace

std::unique_ptr<ExpertBackend> MakeCpuExpertBackend(const ops::ComputeBackend& compute) {
  return std::make_unique<CpuExpertBackend>(compute);
}

SharedTensorExperts::SharedTensorExperts(const ExpertMatrixMap& matrices, int64_t hidden_size,
                                         const ops::ComputeBackend& compute)
    : matrices_(matrices), hidden_size_(hidden_size), compute_(compute) {}

absl::Status SharedTensorExperts::Compute(const RoutedExpertBatch& batch, std::span<float> output) {
  const int64_t tokens = batch.num_tokens;
  const int64_t top_k = batch.top_k;
  const int64_t hidden = hidden_size_;
  if (batch.hidden_size != hidden) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert batch hidden_size ", batch.hidden_size, ", experts have ", hidden));
  }
  if (tokens < 0 || top_k < 0 || static_cast<int64_t>(batch.activations.size()) != tokens * hidden ||
      static_cast<int64_t>(batch.expert_ids.size()) != tokens * top_k ||
      static_cast<int64_t>(batch.gate_weights.size()) != tokens * top_k ||
      static_cast<int64_t>(output.size()) != tokens * hidden) {
    return absl::InvalidArgumentError(absl::StrCat("expert batch sizes inconsistent: tokens ", tokens, ", top_k ",
                                                   top_k, ", activations ", batch.activations.size(), ", ids ",
                                                   batch.expert_ids.size(), ", weights ", batch.gate_weights.size(),
                                                   ", output ", output.size()));
  }
  const auto layer = matrices_.find(batch.layer);
  // expert -> (token, slot) in token order
  std::map<int32_t, std::vector<std::pair<int64_t, int64_t>>> assignments;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t k = 0; k < top_k; ++k) {
      const int32_t expert = batch.expert_ids[t * top_k + k];
      if (expert < 0) continue;  // empty slot
      if (layer == matrices_.end() || !layer->second.contains(expert)) {
        return absl::NotFoundError(
            absl::StrCat("routed expert ", expert, " of layer ", batch.layer, " is not held here"));
      }
      if (!std::isfinite(batch.gate_weights[t * top_k + k])) {
        return absl::InvalidArgumentError(absl::StrCat("non-finite gate weight for token ", t, " slot ", k));
      }
      assignments[expert].emplace_back(t, k);
    }
  }
  std::vector<float> inputs, outputs, gate, up;
  for (const auto& [expert, slots] : assignments) {
    const ExpertMatrices& m = layer->second.at(expert);
    const int64_t rows = static_cast<int64_t>(slots.size());
    const int64_t intermediate = m.gate_proj->dim(0);
    inputs.resize(rows * hidden);
    outputs.resize(rows * hidden);
    for (int64_t r = 0; r < rows; ++r) {
      const float* source = batch.activations.data() + slots[r].first * hidden;
      std::copy(source, source + hidden, inputs.data() + r * hidden);
    }
    // down(silu(gate(x)) * up(x)), as ApplySwiGluMlp computes it.
    gate.resize(rows * intermediate);
    up.resize(rows * intermediate);
    compute_.Linear(inputs, rows, hidden, m.gate_proj->values(), intermediate, gate);
    compute_.Linear(inputs, rows, hidden, m.up_proj->values(), intermediate, up);
    compute_.SiluMultiply(gate, up, gate);
    compute_.Linear(gate, rows, intermediate, m.down_proj->values(), hidden, outputs);
    for (int64_t r = 0; r < rows; ++r) {
      const auto [token, slot] = slots[r];
      const float weight = batch.gate_weights[token * top_k + slot];
      float* destination = output.data() + token * hidden;
      const float* expert_output = outputs.data() + r * hidden;
      for (int64_t c = 0; c < hidden; ++c) destination[c] += weight * expert_output[c];
    }
  }
  return absl::OkStatus();
}

}  // namespace expertmesh::expert_service
