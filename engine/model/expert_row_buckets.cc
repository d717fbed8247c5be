// Bucketing of experts by row count (see expert_row_buckets.h).
#include "engine/model/expert_row_buckets.h"

#include <algorithm>
#include <utility>

namespace expertmesh {

std::vector<ExpertRowBucket> BucketExpertsByRows(std::span<const int32_t> offsets, int max_buckets,
                                                 int64_t row_alignment) {
  row_alignment = std::max<int64_t>(row_alignment, 1);
  std::vector<std::pair<int64_t, int32_t>> by_rows;  // (rows rounded up, expert), most rows first
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    if (const int64_t rows = offsets[e + 1] - offsets[e]; rows > 0) {
      by_rows.emplace_back((rows + row_alignment - 1) / row_alignment * row_alignment, static_cast<int32_t>(e));
    }
  }
  std::stable_sort(by_rows.begin(), by_rows.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<ExpertRowBucket> buckets;
  for (const auto& [rows, expert] : by_rows) {
    const bool wasteful = !buckets.empty() && 4 * rows < 3 * buckets.back().rows;
    if (buckets.empty() || (wasteful && static_cast<int>(buckets.size()) < max_buckets)) buckets.push_back({rows, {}});
    buckets.back().experts.push_back(expert);
  }
  return buckets;
}

}  // namespace expertmesh
