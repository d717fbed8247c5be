// Groups the experts of one batch by how many rows (token slots) each got, for padded batched
// GEMMs: every expert in a bucket is padded to the bucket's row count, so a few hot experts do not
// make every cold one compute (and write) as many rows as they do.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace expertmesh {

struct ExpertRowBucket {
  int64_t rows = 0;              // the largest row count in the bucket, rounded up to the alignment
                                 // (what all are padded to)
  std::vector<int32_t> experts;  // local expert indices, most rows first
};

// `offsets[e]..offsets[e + 1]` are local expert e's rows (offsets non-decreasing). Experts with no
// rows are left out. Row counts are first rounded up to a multiple of `row_alignment` (>= 1), so
// the GEMM shapes repeat from batch to batch (cuBLAS picks and loads its kernels per shape: a
// shape seen for the first time costs far more than the product), and experts whose counts round
// alike share a bucket. Buckets come most rows first; a new one starts where padding an expert to
// the current bucket's row count would waste more than a quarter of its padded rows, while fewer
// than `max_buckets` (>= 1) exist.
std::vector<ExpertRowBucket> BucketExpertsByRows(std::span<const int32_t> offsets, int max_buckets,
                                                 int64_t row_alignment = 1);

// The same buckets (rounded counts, most rows first, at most `max_buckets`), chosen for the least
// cost instead of by the quarter rule: the padded rows of all experts plus `bucket_cost_rows` for
// every bucket (what one more batch of launches and its last, partly filled wave cost, in rows of
// one expert's products). Experts whose counts round alike always share a bucket. Exact (dynamic
// programming over the distinct rounded counts, O(max_buckets x distinct^2)).
std::vector<ExpertRowBucket> PlanExpertRowBuckets(std::span<const int32_t> offsets, int max_buckets,
                                                  int64_t row_alignment, int64_t bucket_cost_rows);

}  // namespace expertmesh
