// BucketExpertsByRows: experts with rows only, most rows first, a new bucket where padding would
// waste over a quarter, the bucket limit, and every expert with rows in exactly one bucket.
#include "engine/model/expert_row_buckets.h"

#include <algorithm>
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

TEST(ExpertRowBucketsTest, EvenRowsShareOneBucketAndEmptyExpertsAreLeftOut) {
  const auto buckets = BucketExpertsByRows(Offsets({10, 0, 9, 8, 0, 10}), 4);
  ASSERT_EQ(buckets.size(), 1u);
  EXPECT_EQ(buckets[0].rows, 10);
  EXPECT_EQ(buckets[0].experts, (std::vector<int32_t>{0, 5, 2, 3}));  // most rows first, ties in order
}

TEST(ExpertRowBucketsTest, SkewedRowsSplitWherePaddingWouldWasteOverAQuarter) {
  // 400 (hot), then 120, 100, 91 (100 * 4 >= 3 * 120; 91 * 4 >= 3 * 120), then 80, 60, then 7.
  const auto buckets = BucketExpertsByRows(Offsets({7, 400, 120, 60, 100, 80, 91}), 8);
  ASSERT_EQ(buckets.size(), 4u);
  EXPECT_EQ(buckets[0].rows, 400);
  EXPECT_EQ(buckets[0].experts, (std::vector<int32_t>{1}));
  EXPECT_EQ(buckets[1].rows, 120);
  EXPECT_EQ(buckets[1].experts, (std::vector<int32_t>{2, 4, 6}));
  EXPECT_EQ(buckets[2].rows, 80);
  EXPECT_EQ(buckets[2].experts, (std::vector<int32_t>{5, 3}));
  EXPECT_EQ(buckets[3].rows, 7);
  EXPECT_EQ(buckets[3].experts, (std::vector<int32_t>{0}));
}

TEST(ExpertRowBucketsTest, TheLimitPutsTheRestInTheLastBucket) {
  const auto one = BucketExpertsByRows(Offsets({7, 400, 120, 60}), 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].rows, 400);
  EXPECT_EQ(one[0].experts, (std::vector<int32_t>{1, 2, 3, 0}));
  const auto two = BucketExpertsByRows(Offsets({7, 400, 120, 60}), 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1].rows, 120);
  EXPECT_EQ(two[1].experts, (std::vector<int32_t>{2, 3, 0}));
  EXPECT_TRUE(BucketExpertsByRows(Offsets({0, 0}), 4).empty());
  EXPECT_TRUE(BucketExpertsByRows({}, 4).empty());
}

TEST(ExpertRowBucketsTest, RowCountsAreRoundedUpToTheAlignment) {
  const auto buckets = BucketExpertsByRows(Offsets({13, 400, 120, 100, 16}), 4, 16);
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].rows, 400);
  EXPECT_EQ(buckets[1].rows, 128);
  EXPECT_EQ(buckets[1].experts, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(buckets[2].rows, 16);
  EXPECT_EQ(buckets[2].experts, (std::vector<int32_t>{0, 4}));  // 13 and 16 both round to 16: in order
}

// Few rows per expert (decode-sized batches) all round to one count: one bucket, not several
// batches of the same padded shape (each a launch and no less work).
TEST(ExpertRowBucketsTest, CountsThatRoundAlikeShareOneBucket) {
  const auto buckets = BucketExpertsByRows(Offsets({1, 8, 2, 4, 3}), 4, 16);
  ASSERT_EQ(buckets.size(), 1u);
  EXPECT_EQ(buckets[0].rows, 16);
  EXPECT_EQ(buckets[0].experts, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(BucketExpertsByRows(Offsets({1, 8, 2, 4, 3}), 4).size(), 4u);  // unaligned: 8 | 4, 3 | 2 | 1
}

TEST(ExpertRowBucketsTest, RandomRowsAreCoveredOnceAndNeverPaddedDown) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> rows(1 + rng() % 40);
    for (int32_t& r : rows) r = rng() % 3 == 0 ? 0 : static_cast<int32_t>(rng() % 500);
    const int max_buckets = 1 + static_cast<int>(rng() % 5);
    const int64_t alignment = 1 + rng() % 32;
    const auto buckets = BucketExpertsByRows(Offsets(rows), max_buckets, alignment);
    EXPECT_LE(static_cast<int>(buckets.size()), max_buckets);
    std::vector<int> seen(rows.size(), 0);
    int64_t previous_rows = INT64_MAX;
    for (const ExpertRowBucket& bucket : buckets) {
      EXPECT_LE(bucket.rows, previous_rows);
      previous_rows = bucket.rows;
      ASSERT_FALSE(bucket.experts.empty());
      EXPECT_EQ(bucket.rows % alignment, 0);
      EXPECT_LT(bucket.rows - rows[bucket.experts.front()], alignment) << "the hottest expert sets the count";
      for (int32_t e : bucket.experts) {
        ++seen[e];
        EXPECT_LE(rows[e], bucket.rows) << "an expert's rows must fit its bucket";
      }
    }
    for (size_t e = 0; e < rows.size(); ++e) EXPECT_EQ(seen[e], rows[e] > 0 ? 1 : 0) << "expert " << e;
  }
}

}  // namespace
}  // namespace expertmesh
