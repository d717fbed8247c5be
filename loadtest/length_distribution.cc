// LengthDistribution parsing and sampling.
#include "loadtest/length_distribution.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace expertmesh::loadtest {
namespace {

absl::Status Bad(std::string_view spec, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "length distribution '", std::string(spec), "': ", std::string(why),
      " (expected N, fixed:N, uniform:MIN:MAX, normal:MEAN:STDDEV or exponential:MEAN, values 1..",
      LengthDistribution::kMaxLength, ")"));
}

}  // namespace

absl::StatusOr<LengthDistribution> LengthDistribution::Parse(std::string_view spec) {
  std::vector<std::string> parts = absl::StrSplit(std::string(spec), ':');
  std::vector<double> values;
  for (size_t i = 1; i < parts.size(); ++i) {
    double value = 0;
    if (!absl::SimpleAtod(parts[i], &value) || !std::isfinite(value)) return Bad(spec, "not a number");
    values.push_back(value);
  }
  auto in_range = [](double value) { return value >= 1 && value <= kMaxLength; };
  double bare = 0;
  if (parts.size() == 1 && absl::SimpleAtod(parts[0], &bare)) {
    if (!in_range(bare) || bare != std::floor(bare)) return Bad(spec, "length out of range");
    return Fixed(static_cast<int>(bare));
  }
  const std::string& kind = parts[0];
  if (kind == "fixed" && values.size() == 1) {
    if (!in_range(values[0]) || values[0] != std::floor(values[0])) return Bad(spec, "length out of range");
    return Fixed(static_cast<int>(values[0]));
  }
  if (kind == "uniform" && values.size() == 2) {
    if (!in_range(values[0]) || !in_range(values[1]) || values[0] > values[1]) return Bad(spec, "need 1 <= MIN <= MAX");
    return LengthDistribution(Kind::kUniform, std::floor(values[0]), std::floor(values[1]));
  }
  if (kind == "normal" && values.size() == 2) {
    if (!in_range(values[0]) || values[1] < 0 || values[1] > kMaxLength) return Bad(spec, "need MEAN >= 1, STDDEV >= 0");
    return LengthDistribution(Kind::kNormal, values[0], values[1]);
  }
  if (kind == "exponential" && values.size() == 1) {
    if (!in_range(values[0])) return Bad(spec, "need MEAN >= 1");
    return LengthDistribution(Kind::kExponential, values[0], 0);
  }
  return Bad(spec, "unknown form");
}

int LengthDistribution::Sample(std::mt19937_64& random) const {
  double value = first_;
  switch (kind_) {
    case Kind::kFixed:
      break;
    case Kind::kUniform:
      value = static_cast<double>(std::uniform_int_distribution<int64_t>(static_cast<int64_t>(first_),
                                                                         static_cast<int64_t>(second_))(random));
      break;
    case Kind::kNormal:
      value = std::normal_distribution<double>(first_, second_)(random);
      break;
    case Kind::kExponential:
      value = std::exponential_distribution<double>(1.0 / first_)(random);
      break;
  }
  return static_cast<int>(std::clamp(std::round(value), 1.0, static_cast<double>(kMaxLength)));
}

double LengthDistribution::Mean() const {
  return kind_ == Kind::kUniform ? (first_ + second_) / 2 : first_;
}

std::string LengthDistribution::ToString() const {
  switch (kind_) {
    case Kind::kFixed:
      return absl::StrCat("fixed:", first_);
    case Kind::kUniform:
      return absl::StrCat("uniform:", first_, ":", second_);
    case Kind::kNormal:
      return absl::StrCat("normal:", first_, ":", second_);
    case Kind::kExponential:
      return absl::StrCat("exponential:", first_);
  }
  return "";
}

}  // namespace expertmesh::loadtest
