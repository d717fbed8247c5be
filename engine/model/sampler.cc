// Sampler: validation, greedy argmax, temperature + nucleus (top-p) sampling on splitmix64.
#include "engine/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/ops/top_k.h"

namespace expertmesh {

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  if (!std::isfinite(params.temperature) || params.temperature < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be finite and >= 0, got ", params.temperature));
  }
  if (std::isnan(params.top_p) || params.top_p <= 0.0f || params.top_p > 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", params.top_p));
  }
  return absl::OkStatus();
}

uint64_t SplitMix64::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double SplitMix64::NextUnitDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

absl::StatusOr<Sampler> Sampler::Create(const SamplingParams& params) {
  absl::Status valid = ValidateSamplingParams(params);
  if (!valid.ok()) return valid;
  return Sampler(params);
}

int32_t ArgMax(std::span<const float> values) {
  int32_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

absl::StatusOr<int32_t> Sampler::Sample(std::span<const float> logits) {
  if (logits.empty()) return absl::InvalidArgumentError("cannot sample from empty logits");
  bool any_finite = false;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i]) || logits[i] == std::numeric_limits<float>::infinity()) {
      return absl::InvalidArgumentError(absl::StrCat("logits contain ", logits[i], " at index ", i));
    }
    any_finite |= std::isfinite(logits[i]);
  }
  if (!any_finite) return absl::InvalidArgumentError("all logits are -inf");
  if (params_.temperature == 0.0f) return ArgMax(logits);

  const std::vector<int32_t> order = ops::ArgsortDescending(logits);
  const double max_logit = logits[order[0]];
  std::vector<double> probabilities(order.size());
  double total = 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    probabilities[i] = std::exp((double(logits[order[i]]) - max_logit) / double(params_.temperature));
    total += probabilities[i];
  }
  // Nucleus: the smallest prefix (most likely first) whose probability reaches top_p.
  size_t kept = 0;
  double kept_mass = 0.0;
  while (kept < order.size()) {
    kept_mass += probabilities[kept] / total;
    ++kept;
    if (kept_mass >= double(params_.top_p)) break;
  }
  double kept_total = 0.0;
  for (size_t i = 0; i < kept; ++i) kept_total += probabilities[i];
  const double target = random_.NextUnitDouble() * kept_total;
  double cumulative = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    cumulative += probabilities[i];
    if (target < cumulative) return order[i];
  }
  return order[kept - 1];
}

}  // namespace expertmesh
