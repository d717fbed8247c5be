// RotaryEmbedding: YaRN inverse frequencies, attention factor, cos/sin tables, rotation.
#include "engine/ops/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace expertmesh::ops {
namespace {

// Dimension (in rotary channels) at which a wavelength fits `num_rotations` times into
// `max_positions` (YaRN's "find_correction_dim").
double CorrectionDim(double num_rotations, double dim, double base, double max_positions) {
  return dim * std::log(max_positions / (num_rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(base));
}

}  // namespace

double YarnMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

absl::StatusOr<RotaryEmbedding> RotaryEmbedding::Create(const RopeParameters& parameters) {
  const int64_t dim = parameters.rotary_dim;
  if (dim <= 0 || dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("rotary_dim must be positive and even, got ", dim));
  }
  if (!(parameters.theta > 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("rope theta must be > 1, got ", parameters.theta));
  }
  if (parameters.table_positions < 0) {
    return absl::InvalidArgumentError("table_positions must be >= 0");
  }
  RotaryEmbedding rope;
  rope.parameters_ = parameters;
  const int64_t half = dim / 2;
  rope.inverse_frequencies_.resize(half);
  // transformers: pos_freqs = base ** (arange(0, dim, 2).float() / dim), all float32.
  std::vector<float> position_frequencies(half);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    position_frequencies[i] = static_cast<float>(std::pow(parameters.theta, double(exponent)));
  }
  if (!parameters.yarn) {
    for (int64_t i = 0; i < half; ++i) rope.inverse_frequencies_[i] = 1.0f / position_frequencies[i];
  } else {
    const YarnParameters& yarn = *parameters.yarn;
    if (!(yarn.factor > 0.0) || yarn.original_max_position_embeddings <= 0) {
      return absl::InvalidArgumentError("YaRN factor and original_max_position_embeddings must be > 0");
    }
    double low = std::floor(CorrectionDim(yarn.beta_fast, double(dim), parameters.theta,
                                          double(yarn.original_max_position_embeddings)));
    double high = std::ceil(CorrectionDim(yarn.beta_slow, double(dim), parameters.theta,
                                          double(yarn.original_max_position_embeddings)));
    low = std::max(low, 0.0);
    high = std::min(high, double(dim - 1));
    if (low == high) high += 0.001;  // avoid a zero-width ramp
    for (int64_t i = 0; i < half; ++i) {
      const float ramp = std::clamp(static_cast<float>((double(i) - low) / (high - low)), 0.0f, 1.0f);
      const float extrapolation_weight = 1.0f - ramp;
      const float extrapolated = 1.0f / position_frequencies[i];
      const float interpolated =
          1.0f / (static_cast<float>(yarn.factor) * position_frequencies[i]);
      rope.inverse_frequencies_[i] = interpolated * (1.0f - extrapolation_weight) +
                                     extrapolated * extrapolation_weight;
    }
    // transformers: mscale and mscale_all_dim both set -> ratio, else the plain YaRN mscale.
    double factor = 0.0;
    if (yarn.mscale != 0.0 && yarn.mscale_all_dim != 0.0) {
      factor = YarnMscale(yarn.factor, yarn.mscale) / YarnMscale(yarn.factor, yarn.mscale_all_dim);
    } else {
      factor = YarnMscale(yarn.factor, 1.0);
    }
    rope.attention_factor_ = static_cast<float>(factor);
  }
  rope.cos_table_.resize(parameters.table_positions * half);
  rope.sin_table_.resize(parameters.table_positions * half);
  for (int64_t position = 0; position < parameters.table_positions; ++position) {
    for (int64_t i = 0; i < half; ++i) {
      rope.AngleCosSin(position, i, &rope.cos_table_[position * half + i],
                       &rope.sin_table_[position * half + i]);
    }
  }
  return rope;
}

void RotaryEmbedding::AngleCosSin(int64_t position, int64_t index, float* cos_out,
                                  float* sin_out) const {
  // float32 angle (inv_freq @ position_ids in float32), then cos/sin, times attention_factor.
  const float angle = inverse_frequencies_[index] * static_cast<float>(position);
  *cos_out = static_cast<float>(std::cos(double(angle))) * attention_factor_;
  *sin_out = static_cast<float>(std::sin(double(angle))) * attention_factor_;
}

float RotaryEmbedding::Cos(int64_t position, int64_t index) const {
  const int64_t half = parameters_.rotary_dim / 2;
  if (position < parameters_.table_positions) return cos_table_[position * half + index];
  float c, s;
  AngleCosSin(position, index, &c, &s);
  return c;
}

float RotaryEmbedding::Sin(int64_t position, int64_t index) const {
  const int64_t half = parameters_.rotary_dim / 2;
  if (position < parameters_.table_positions) return sin_table_[position * half + index];
  float c, s;
  AngleCosSin(position, index, &c, &s);
  return s;
}

void RotaryEmbedding::Apply(std::span<float> vector, int64_t position) const {
  const int64_t half = parameters_.rotary_dim / 2;
  const bool in_table = position < parameters_.table_positions;
  for (int64_t i = 0; i < half; ++i) {
    float c, s;
    if (in_table) {
      c = cos_table_[position * half + i];
      s = sin_table_[position * half + i];
    } else {
      AngleCosSin(position, i, &c, &s);
    }
    const int64_t first = parameters_.pairing == RotaryPairing::kInterleaved ? 2 * i : i;
    const int64_t second = parameters_.pairing == RotaryPairing::kInterleaved ? 2 * i + 1 : i + half;
    const float x = vector[first], y = vector[second];
    vector[first] = x * c - y * s;
    vector[second] = y * c + x * s;
  }
}

}  // namespace expertmesh::ops
