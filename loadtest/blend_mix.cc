// BlendMix parsing and weighted choice.
#include "loadtest/blend_mix.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace expertmesh::loadtest {

absl::StatusOr<BlendMix> BlendMix::Parse(std::string_view spec) {
  BlendMix mix;
  if (spec.empty()) return mix;
  std::set<std::string> seen;
  double total = 0;
  std::vector<std::string> items = absl::StrSplit(std::string(spec), ',');
  for (const std::string& item : items) {
    std::vector<std::string> parts = absl::StrSplit(item, '=');
    Entry entry;
    entry.blend = parts[0];
    if (entry.blend.empty() || parts.size() > 2) {
      return absl::InvalidArgumentError(absl::StrCat("blend mix '", std::string(spec), "': expected NAME[=WEIGHT],..."));
    }
    if (parts.size() == 2 && (!absl::SimpleAtod(parts[1], &entry.weight) || !std::isfinite(entry.weight) ||
                              entry.weight <= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("blend mix '", std::string(spec), "': weight of '", entry.blend, "' must be a positive number"));
    }
    if (!seen.insert(entry.blend).second) {
      return absl::InvalidArgumentError(absl::StrCat("blend mix '", std::string(spec), "': '", entry.blend, "' twice"));
    }
    total += entry.weight;
    mix.entries_.push_back(entry);
    mix.cumulative_.push_back(total);
  }
  return mix;
}

const std::string& BlendMix::Pick(std::mt19937_64& random) const {
  double point = std::uniform_real_distribution<double>(0, cumulative_.back())(random);
  size_t index = std::upper_bound(cumulative_.begin(), cumulative_.end(), point) - cumulative_.begin();
  return entries_[std::min(index, entries_.size() - 1)].blend;
}

}  // namespace expertmesh::loadtest
