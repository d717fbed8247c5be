// Rotary position embedding with optional YaRN context extension, as computed by Hugging Face
// transformers' _compute_yarn_parameters (inv_freq blend and attention_factor applied to cos/sin)
// and DeepSeek's inference code. cos/sin tables are precomputed for the configured positions;
// later positions are computed on the fly the same way (float32 angles, like PyTorch).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace expertmesh::ops {

struct YarnParameters {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

// Which channels of a rotary vector form the rotated (x, y) pairs.
enum class RotaryPairing {
  kInterleaved,  // (x[2i], x[2i+1]): DeepSeek weights; HF's rope_interleave / V2's complex form
  kHalfSplit,    // (x[i], x[i + d/2]): HF rotate_half on non-interleaved weights
};

struct RopeParameters {
  int64_t rotary_dim = 0;  // even
  double theta = 10000.0;
  std::optional<YarnParameters> yarn;
  int64_t table_positions = 4096;  // positions precomputed
  RotaryPairing pairing = RotaryPairing::kInterleaved;
};

// YaRN's magnitude correction: 1 for scale <= 1, else 0.1 * mscale * ln(scale) + 1.
double YarnMscale(double scale, double mscale);

class RotaryEmbedding {
 public:
  static absl::StatusOr<RotaryEmbedding> Create(const RopeParameters& parameters);

  int64_t rotary_dim() const { return parameters_.rotary_dim; }
  // Per-frequency inverse frequencies (rotary_dim / 2), float32 as transformers computes them.
  std::span<const float> inverse_frequencies() const { return inverse_frequencies_; }
  // The factor cos and sin are multiplied by (transformers' attention_factor; 1 without YaRN).
  float attention_factor() const { return attention_factor_; }

  // cos/sin (already times attention_factor) of frequency `index` at `position`.
  float Cos(int64_t position, int64_t index) const;
  float Sin(int64_t position, int64_t index) const;

  // Rotates one rotary vector (rotary_dim floats) in place for `position`.
  void Apply(std::span<float> vector, int64_t position) const;

 private:
  RotaryEmbedding() = default;
  void AngleCosSin(int64_t position, int64_t index, float* cos_out, float* sin_out) const;

  RopeParameters parameters_;
  std::vector<float> inverse_frequencies_;
  float attention_factor_ = 1.0f;
  std::vector<float> cos_table_;  // [table_positions, rotary_dim / 2]
  std::vector<float> sin_table_;
};

}  // namespace expertmesh::ops
