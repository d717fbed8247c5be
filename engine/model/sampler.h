// Sampler: picks the next token from a logits row. Greedy (argmax, lowest index on ties) when
// temperature is 0; otherwise softmax(logits / temperature) restricted to the smallest set of
// most likely tokens whose probability reaches top_p, drawn with a seeded splitmix64 generator so
// the same seed gives the same tokens on every platform and standard library.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"

namespace expertmesh {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy; must be finite and >= 0
  float top_p = 1.0f;        // in (0, 1]
  uint64_t seed = 0;
};

// INVALID_ARGUMENT for temperature < 0 or non-finite, top_p outside (0, 1] or NaN.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// splitmix64: tiny, fast, identical everywhere.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform double in [0, 1) from the top 53 bits.
  double NextUnitDouble();

 private:
  uint64_t state_;
};

class Sampler {
 public:
  static absl::StatusOr<Sampler> Create(const SamplingParams& params);

  // Next token id. INVALID_ARGUMENT for empty logits, NaN or +inf entries, or all -inf.
  absl::StatusOr<int32_t> Sample(std::span<const float> logits);
  const SamplingParams& params() const { return params_; }

 private:
  explicit Sampler(const SamplingParams& params) : params_(params), random_(params.seed) {}
  SamplingParams params_;
  SplitMix64 random_;
};

// Index of the largest value, lowest index on ties (no validation).
int32_t ArgMax(std::span<const float> values);

}  // namespace expertmesh
