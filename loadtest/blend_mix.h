// BlendMix: which blend each load-test request names explicitly, drawn by weight from a spec
// such as "prose=3,code=1" (a name without "=W" weighs 1). An empty mix names no blend, leaving
// the choice to the router's A/B split.
#pragma once

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace expertmesh::loadtest {

class BlendMix {
 public:
  struct Entry {
    std::string blend;
    double weight = 1;
  };

  static absl::StatusOr<BlendMix> Parse(std::string_view spec);

  bool empty() const { return entries_.empty(); }
  const std::vector<Entry>& entries() const { return entries_; }
  // A blend drawn with probability weight / sum(weights).
  const std::string& Pick(std::mt19937_64& random) const;

 private:
  std::vector<Entry> entries_;
  std::vector<double> cumulative_;
};

}  // namespace expertmesh::loadtest
