// TopKIndices / ArgsortDescending with a total order (value desc, NaN last, index asc).
#include "engine/ops/top_k.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace expertmesh::ops {
namespace {

struct DescendingByValue {
  std::span<const float> values;
  bool operator()(int32_t a, int32_t b) const {
    const float va = values[a], vb = values[b];
    const bool a_nan = std::isnan(va), b_nan = std::isnan(vb);
    if (a_nan != b_nan) return b_nan;  // numbers before NaN
    if (!a_nan && va != vb) return va > vb;
    return a < b;
  }
};

}  // namespace

std::vector<int32_t> TopKIndices(std::span<const float> values, int64_t k) {
  std::vector<int32_t> indices(values.size());
  std::iota(indices.begin(), indices.end(), 0);
  const auto count = static_cast<size_t>(std::clamp<int64_t>(k, 0, int64_t(values.size())));
  std::partial_sort(indices.begin(), indices.begin() + count, indices.end(),
                    DescendingByValue{values});
  indices.resize(count);
  return indices;
}

std::vector<int32_t> ArgsortDescending(std::span<const float> values) {
  std::vector<int32_t> indices(values.size());
  std::iota(indices.begin(), indices.end(), 0);
  std::sort(indices.begin(), indices.end(), DescendingByValue{values});
  return indices;
}

}  // namespace expertmesh::ops
