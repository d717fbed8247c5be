// PlanExpertRowBuckets: experts with rows only, most rows first, counts rounded to the alignment,
// the bucket limit, the least modeled cost (padded rows, free below the weight bound, plus a cost
// per bucket) against every partition tried; CostsOfExpertRows for V2-Lite's shape.
#include "engine/model/expert_row_buckets.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <functional>
#include <map>
#include <random>

#include <gtest/gtest.h>

namespace expertmesh {
namespace {

// Offsets from per-expert row counts.
std::vector<int32_t> Offsets(const std::vector<int32_t>& rows) {
  std::vector<int32_t> offsets{0};
  for (int32_t r : rows) offsets.push_back(offsets.back() + r);
  return offsets;
}

// A plan's modeled cost; fails the test unless every expert with rows is in exactly one bucket,
// no bucket is empty and every expert fits its bucket.
int64_t PlanCost(const std::vector<ExpertRowBucket>& buckets, const std::vector<int32_t>& rows,
                 const RowBucketCosts& costs) {
  std::vector<int> seen(rows.size(), 0);
  int64_t cost = 0, previous_rows = INT64_MAX;
  for (const ExpertRowBucket& bucket : buckets) {
    EXPECT_FALSE(bucket.experts.empty());
    EXPECT_LT(bucket.rows, previous_rows) << "buckets come most rows first, each count in one bucket";
    previous_rows = bucket.rows;
    for (int32_t e : bucket.experts) {
      ++seen[e];
      EXPECT_LE(rows[e], bucket.rows);
    }
    cost += std::max(bucket.rows, costs.weight_bound) * static_cast<int64_t>(bucket.experts.size()) + costs.per_bucket;
  }
  for (size_t e = 0; e < rows.size(); ++e) EXPECT_EQ(seen[e], rows[e] > 0 ? 1 : 0) << "expert " << e;
  return cost;
}

TEST(PlanExpertRowBucketsTest, EmptyExpertsAreLeftOutAndCountsRoundUpToTheAlignment) {
  // 13 and 16 round to 16, 115 and 120 to 128; free buckets: one per rounded count, in order.
  const auto buckets = PlanExpertRowBuckets(Offsets({13, 0, 400, 120, 115, 16, 0}), 8, 16, {0, 0});
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].rows, 400);
  EXPECT_EQ(buckets[0].experts, (std::vector<int32_t>{2}));
  EXPECT_EQ(buckets[1].rows, 128);
  EXPECT_EQ(buckets[1].experts, (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(buckets[2].rows, 16);
  EXPECT_EQ(buckets[2].experts, (std::vector<int32_t>{0, 5}));
  // The limit: two buckets at most, the cheaper split (400 | 128, 128, 16, 16).
  const auto two = PlanExpertRowBuckets(Offsets({13, 0, 400, 120, 115, 16, 0}), 2, 16, {0, 0});
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1].rows, 128);
  EXPECT_EQ(two[1].experts, (std::vector<int32_t>{3, 4, 0, 5}));
}

TEST(PlanExpertRowBucketsTest, PaysForABucketOnlyWhenItSavesMoreRows) {
  // 100, 100, 90, 10 in two buckets: {100, 100, 90 | 10} pads 310 rows, {100, 100 | 90, 10} 380,
  // one bucket 400. A bucket costing 50 rows: two (410 < 450); costing 100: one (500 < 510).
  const auto offsets = Offsets({90, 100, 10, 100});
  const auto two = PlanExpertRowBuckets(offsets, 2, 1, {50, 0});
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].rows, 100);
  EXPECT_EQ(two[0].experts, (std::vector<int32_t>{1, 3, 0}));
  EXPECT_EQ(two[1].rows, 10);
  EXPECT_EQ(two[1].experts, (std::vector<int32_t>{2}));
  const auto one = PlanExpertRowBuckets(offsets, 2, 1, {100, 0});
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].rows, 100);
  EXPECT_EQ(one[0].experts, (std::vector<int32_t>{1, 3, 0, 2}));
  // Free buckets and room for all: one per distinct count, nothing padded.
  const auto free = PlanExpertRowBuckets(offsets, 8, 1, {0, 0});
  ASSERT_EQ(free.size(), 3u);
  EXPECT_EQ(free[1].rows, 90);
  EXPECT_TRUE(PlanExpertRowBuckets(Offsets({0, 0}), 4, 16, {10, 0}).empty());
  EXPECT_TRUE(PlanExpertRowBuckets({}, 4, 16, {10, 0}).empty());
}

// Uniform routing of 4096 tokens over 64 experts (top 6) gives counts of 384 +- 19: one bucket
// padded to the hottest expert pads over 10% more rows than routed, the plan (V2-Lite's costs with
// a cheap bucket) under 5%.
TEST(PlanExpertRowBucketsTest, PadsUniformPrefillRoutingLessThanOneBucket) {
  std::mt19937 rng(11);
  std::vector<int32_t> rows(64, 0);
  for (int token = 0; token < 4096; ++token) {
    std::vector<int32_t> experts(64);
    for (int e = 0; e < 64; ++e) experts[e] = e;
    std::shuffle(experts.begin(), experts.end(), rng);
    for (int k = 0; k < 6; ++k) ++rows[experts[k]];
  }
  const auto offsets = Offsets(rows);
  const auto one = PlanExpertRowBuckets(offsets, 1, 16, {});
  const auto planned = PlanExpertRowBuckets(offsets, 4, 16, CostsOfExpertRows({11.5, 640, 3000}, 2048, 1408));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_GT(planned.size(), 1u);
  EXPECT_GT(PlanCost(one, rows, {}), 4096 * 6 * 110 / 100) << "over 10% padding in one bucket";
  EXPECT_LT(PlanCost(planned, rows, {}), 4096 * 6 * 105 / 100) << "under 5% planned";
}

// Below the weight bound padding is free: counts of 16-48 rows (256 tokens) share one bucket
// (a bucket of 20 rows would pay for itself without the bound: 48 x 3 + 32 x 4 + 2 x 20 < 48 x 7
// + 20).
TEST(PlanExpertRowBucketsTest, WeightBoundCountsShareOneBucket) {
  const auto offsets = Offsets({48, 30, 20, 17, 9, 33, 40});
  const auto planned = PlanExpertRowBuckets(offsets, 4, 16, {20, 213});
  ASSERT_EQ(planned.size(), 1u);
  EXPECT_EQ(planned[0].rows, 48);
  EXPECT_EQ(planned[0].experts, (std::vector<int32_t>{0, 5, 6, 1, 2, 3, 4}));
  // Free buckets and no weight bound: one per distinct rounded count (48, 32, 16).
  EXPECT_EQ(PlanExpertRowBuckets(offsets, 4, 16, {0, 0}).size(), 3u);
}

// V2-Lite (hidden 2048, moe_intermediate 1408) at 640 TFLOP/s and 3000 GB/s: a row is 17.3 MFLOP
// = 0.027 us, so a bucket of 11.5 us is 425 rows (the default 40 us: 1480); the weights (17.3 MB)
// take as long as 213 rows.
TEST(PlanExpertRowBucketsTest, CostsOfExpertRowsFromTheModelsSpeeds) {
  const RowBucketCosts costs = CostsOfExpertRows({11.5, 640, 3000}, 2048, 1408);
  EXPECT_EQ(costs.per_bucket, 425);
  EXPECT_EQ(costs.weight_bound, 213);
  EXPECT_EQ(CostsOfExpertRows({}, 2048, 1408).per_bucket, 1480);
  EXPECT_EQ(CostsOfExpertRows({11.5, 640, 1500}, 2048, 1408).weight_bound, 427);
  EXPECT_EQ(CostsOfExpertRows({0, 640, 3000}, 7168, 2048).per_bucket, 0);
}

// Against every partition of the distinct rounded counts into at most max_buckets runs.
TEST(PlanExpertRowBucketsTest, CostsNoMoreThanTheBestPartitionFoundByTryingEvery) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> rows(1 + rng() % 12);
    for (int32_t& r : rows) r = rng() % 4 == 0 ? 0 : static_cast<int32_t>(1 + rng() % 300);
    const int max_buckets = 1 + static_cast<int>(rng() % 4);
    const int64_t alignment = 1 + rng() % 20;
    RowBucketCosts costs;
    costs.per_bucket = rng() % 400;
    costs.weight_bound = rng() % 2 == 0 ? 0 : static_cast<int64_t>(rng() % 200);
    // Distinct rounded counts, most first, and how many experts have each.
    std::map<int64_t, int64_t, std::greater<>> experts_with;
    for (int32_t r : rows) {
      if (r > 0) ++experts_with[(r + alignment - 1) / alignment * alignment];
    }
    const std::vector<std::pair<int64_t, int64_t>> groups(experts_with.begin(), experts_with.end());
    int64_t best = groups.empty() ? 0 : INT64_MAX;
    const int gaps = groups.empty() ? 0 : static_cast<int>(groups.size()) - 1;
    for (uint32_t cuts = 0; !groups.empty() && cuts < (1u << gaps); ++cuts) {  // bit g: a bucket ends after group g
      const int buckets = std::popcount(cuts) + 1;
      if (buckets > max_buckets) continue;
      int64_t cost = buckets * costs.per_bucket, top = groups[0].first;
      for (size_t g = 0; g < groups.size(); ++g) {
        if (g > 0 && (cuts >> (g - 1) & 1u)) top = groups[g].first;
        cost += std::max(top, costs.weight_bound) * groups[g].second;
      }
      best = std::min(best, cost);
    }
    const auto plan = PlanExpertRowBuckets(Offsets(rows), max_buckets, alignment, costs);
    EXPECT_LE(static_cast<int>(plan.size()), max_buckets);
    for (const ExpertRowBucket& bucket : plan) EXPECT_EQ(bucket.rows % alignment, 0);
    EXPECT_EQ(PlanCost(plan, rows, costs), best) << "trial " << trial;
  }
}

}  // namespace
}  // namespace expertmesh
