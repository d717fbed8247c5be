// Top-k selection helpers for routing and sampling. Ties break toward the lower index, so results
// are deterministic across platforms; NaN is never selected ahead of a number.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace expertmesh::ops {

// Indices of the k largest values, largest first (k is clamped to values.size()).
std::vector<int32_t> TopKIndices(std::span<const float> values, int64_t k);

// All indices sorted by value, largest first (ties: lower index first).
std::vector<int32_t> ArgsortDescending(std::span<const float> values);

}  // namespace expertmesh::ops
