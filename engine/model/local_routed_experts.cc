// LocalRoutedExperts: validation, token grouping per expert, weighted scatter-add.
#include "engine/model/local_routed_experts.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/model/swiglu_mlp.h"

namespace expertmesh {

LocalRoutedExperts::LocalRoutedExperts(int64_t hidden_size, int64_t intermediate_size,
                                       const ops::ComputeBackend& backend)
    : hidden_size_(hidden_size), intermediate_size_(intermediate_size), backend_(backend) {}

absl::Status LocalRoutedExperts::AddExpert(int64_t layer, int32_t expert, MlpWeights weights) {
  if (layer < 0 || expert < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad expert address layer ", layer, " expert ", expert));
  }
  EXPERTMESH_RETURN_IF_ERROR(ValidateMlpWeights(weights, hidden_size_, intermediate_size_,
                                                absl::StrCat("layer ", layer, " expert ", expert)));
  experts_[layer][expert] = std::move(weights);
  return absl::OkStatus();
}

bool LocalRoutedExperts::HasExpert(int64_t layer, int32_t expert) const {
  auto it = experts_.find(layer);
  return it != experts_.end() && it->second.count(expert) > 0;
}

int64_t LocalRoutedExperts::num_experts() const {
  int64_t count = 0;
  for (const auto& [layer, experts] : experts_) count += static_cast<int64_t>(experts.size());
  return count;
}

uint64_t LocalRoutedExperts::ByteSize() const {
  uint64_t bytes = 0;
  for (const auto& [layer, experts] : experts_) {
    for (const auto& [id, m] : experts) {
      bytes += (m.gate_proj.size() + m.up_proj.size() + m.down_proj.size()) * sizeof(float);
    }
  }
  return bytes;
}

absl::Status LocalRoutedExperts::Compute(const RoutedExpertBatch& batch, std::span<float> output) {
  const int64_t tokens = batch.num_tokens;
  const int64_t top_k = batch.top_k;
  if (batch.hidden_size != hidden_size_) {
    return absl::InvalidArgumentError(absl::StrCat("expert batch hidden_size ", batch.hidden_size,
                                                   ", experts have ", hidden_size_));
  }
  if (tokens < 0 || top_k < 0 || static_cast<int64_t>(batch.activations.size()) != tokens * hidden_size_ ||
      static_cast<int64_t>(batch.expert_ids.size()) != tokens * top_k ||
      static_cast<int64_t>(batch.gate_weights.size()) != tokens * top_k ||
      static_cast<int64_t>(output.size()) != tokens * hidden_size_) {
    return absl::InvalidArgumentError(absl::StrCat("expert batch sizes inconsistent: tokens ", tokens, ", top_k ",
                                                   top_k, ", activations ", batch.activations.size(),
                                                   ", ids ", batch.expert_ids.size(), ", weights ",
                                                   batch.gate_weights.size(), ", output ", output.size()));
  }
  auto layer_it = experts_.find(batch.layer);
  // expert -> list of (token, slot)
  std::map<int32_t, std::vector<std::pair<int64_t, int64_t>>> assignments;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t k = 0; k < top_k; ++k) {
      const int32_t expert = batch.expert_ids[t * top_k + k];
      if (expert < 0) continue;  // empty slot
      if (layer_it == experts_.end() || layer_it->second.count(expert) == 0) {
        return absl::NotFoundError(absl::StrCat("routed expert ", expert, " of layer ", batch.layer,
                                                " is not held here"));
      }
      if (!std::isfinite(batch.gate_weights[t * top_k + k])) {
        return absl::InvalidArgumentError(absl::StrCat("non-finite gate weight for token ", t, " slot ", k));
      }
      assignments[expert].emplace_back(t, k);
    }
  }
  std::vector<float> inputs, outputs;
  for (const auto& [expert, slots] : assignments) {
    const int64_t rows = static_cast<int64_t>(slots.size());
    inputs.resize(rows * hidden_size_);
    outputs.resize(rows * hidden_size_);
    for (int64_t r = 0; r < rows; ++r) {
      const float* source = batch.activations.data() + slots[r].first * hidden_size_;
      std::copy(source, source + hidden_size_, inputs.data() + r * hidden_size_);
    }
    ApplySwiGluMlp(backend_, layer_it->second.at(expert), inputs, rows, outputs);
    for (int64_t r = 0; r < rows; ++r) {
      const auto [token, slot] = slots[r];
      const float weight = batch.gate_weights[token * top_k + slot];
      float* destination = output.data() + token * hidden_size_;
      const float* expert_output = outputs.data() + r * hidden_size_;
      for (int64_t c = 0; c < hidden_size_; ++c) destination[c] += weight * expert_output[c];
    }
  }
  return absl::OkStatus();
}

}  // namespace expertmesh
