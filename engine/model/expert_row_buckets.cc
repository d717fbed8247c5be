// Bucketing of experts by row count for the least modeled cost (see expert_row_buckets.h).
#include "engine/model/expert_row_buckets.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace expertmesh {
namespace {

// (rows rounded up to the alignment, expert) for the experts with rows, most rows first, ties in
// expert order.
std::vector<std::pair<int64_t, int32_t>> RoundedRowsMostFirst(std::span<const int32_t> offsets, int64_t row_alignment) {
  row_alignment = std::max<int64_t>(row_alignment, 1);
  std::vector<std::pair<int64_t, int32_t>> by_rows;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    if (const int64_t rows = offsets[e + 1] - offsets[e]; rows > 0) {
      by_rows.emplace_back((rows + row_alignment - 1) / row_alignment * row_alignment, static_cast<int32_t>(e));
    }
  }
  std::stable_sort(by_rows.begin(), by_rows.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return by_rows;
}

}  // namespace

RowBucketCosts CostsOfExpertRows(const RowBucketModel& model, int64_t hidden, int64_t intermediate) {
  const double per_expert = 6.0 * static_cast<double>(hidden) * static_cast<double>(intermediate);
  const double row_us = per_expert / (std::max(model.gemm_tflops, 1e-9) * 1e6);  // flops / (flops per us)
  const double weights_us = per_expert / (std::max(model.weight_read_gbps, 1e-9) * 1e3);
  return {std::llround(std::max(model.bucket_overhead_us, 0.0) / row_us), std::llround(weights_us / row_us)};
}

std::vector<ExpertRowBucket> PlanExpertRowBuckets(std::span<const int32_t> offsets, int max_buckets,
                                                  int64_t row_alignment, const RowBucketCosts& costs) {
  const std::vector<std::pair<int64_t, int32_t>> by_rows = RoundedRowsMostFirst(offsets, row_alignment);
  if (by_rows.empty()) return {};
  // Distinct rounded counts, most first: value[g], and first[g] = index in by_rows of its first
  // expert (first[distinct] = all). A bucket is a run of groups [i, j) padded to value[i].
  std::vector<int64_t> value;
  std::vector<int64_t> first;
  for (size_t k = 0; k < by_rows.size(); ++k) {
    if (k == 0 || by_rows[k].first != by_rows[k - 1].first) {
      value.push_back(by_rows[k].first);
      first.push_back(static_cast<int64_t>(k));
    }
  }
  const auto distinct = static_cast<int64_t>(value.size());
  first.push_back(static_cast<int64_t>(by_rows.size()));
  const int64_t most_buckets = std::clamp<int64_t>(max_buckets, 1, distinct);
  // What an expert padded to value[g] costs (non-increasing in g, as value is).
  std::vector<int64_t> expert_cost(distinct);
  for (int64_t g = 0; g < distinct; ++g) expert_cost[g] = std::max(value[g], costs.weight_bound);
  // cost[b][j]: the least cost of groups [0, j) in b buckets; split[b][j]: where its last bucket starts.
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int64_t>> cost(most_buckets + 1, std::vector<int64_t>(distinct + 1, kNone));
  std::vector<std::vector<int64_t>> split(most_buckets + 1, std::vector<int64_t>(distinct + 1, 0));
  cost[0][0] = 0;
  for (int64_t b = 1; b <= most_buckets; ++b) {
    for (int64_t j = b; j <= distinct; ++j) {
      for (int64_t i = b - 1; i < j; ++i) {
        if (cost[b - 1][i] == kNone) continue;
        const int64_t candidate =
            cost[b - 1][i] + expert_cost[i] * (first[j] - first[i]) + costs.per_bucket;
        if (candidate < cost[b][j]) {
          cost[b][j] = candidate;
          split[b][j] = i;
        }
      }
    }
  }
  int64_t buckets_used = 1;  // the fewest buckets among equal costs
  for (int64_t b = 2; b <= most_buckets; ++b) {
    if (cost[b][distinct] < cost[buckets_used][distinct]) buckets_used = b;
  }
  std::vector<ExpertRowBucket> buckets(buckets_used);
  for (int64_t b = buckets_used, j = distinct; b > 0; j = split[b][j], --b) {
    const int64_t i = split[b][j];
    ExpertRowBucket& bucket = buckets[b - 1];
    bucket.rows = value[i];
    for (int64_t k = first[i]; k < first[j]; ++k) bucket.experts.push_back(by_rows[k].second);
  }
  return buckets;
}

}  // namespace expertmesh
