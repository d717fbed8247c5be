// LengthDistribution: how many tokens a generated prompt has or a request may generate:
// "N" or "fixed:N", "uniform:MIN:MAX", "normal:MEAN:STDDEV", "exponential:MEAN". Samples are
// rounded and clamped to 1 .. kMaxLength.
#pragma once

#include <random>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace expertmesh::loadtest {

class LengthDistribution {
 public:
  static constexpr int kMaxLength = 1 << 20;
  enum class Kind { kFixed, kUniform, kNormal, kExponential };

  static absl::StatusOr<LengthDistribution> Parse(std::string_view spec);
  static LengthDistribution Fixed(int length) { return LengthDistribution(Kind::kFixed, length, 0); }

  int Sample(std::mt19937_64& random) const;
  double Mean() const;
  std::string ToString() const;

 private:
  LengthDistribution(Kind kind, double first, double second) : kind_(kind), first_(first), second_(second) {}
  Kind kind_;
  double first_;
  double second_;
};

}  // namespace expertmesh::loadtest
