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

// What PlanExpertRowBuckets minimises, in rows of one expert's products (the time one more row
// takes where the products are bound by arithmetic).
struct RowBucketCosts {
  int64_t per_bucket = 0;    // one more bucket: its launches and its last, partly filled wave
  int64_t weight_bound = 0;  // an expert's products never cost less than this many rows (reading its
                             // weights takes as long), so padding up to it is free
  int64_t tile_rows = 1;     // products are computed in whole tiles of this many rows
};

// Speeds of one GPU that give RowBucketCosts for an expert shape. Defaults from an H100
// (bench/RESULTS.md): run 9, V2-Lite at 256 tokens with weight-bound products, one bucket 0.487
// ms against the quarter rule's (2-4 buckets for such routings) 0.510 ms: 8-23 us a bucket, 11.5
// taken; run 13, the batched products at 606-663 TFLOP/s; copy bandwidth ~3040 GB/s.
// tile_rows = 1 leaves tiles out; run 13's 4096-token V2-Lite products ran in tiles of 256 x 144
// (nvjet kernel names; which side holds the rows was not checked).
struct RowBucketModel {
  double bucket_overhead_us = 11.5;
  double gemm_tflops = 640;
  double weight_read_gbps = 3000;
  int64_t tile_rows = 1;
};

// An expert of `hidden` x `intermediate` (gate, up and down in bf16): a row costs 6 x hidden x
// intermediate flops at model.gemm_tflops, its weights 6 x hidden x intermediate bytes at
// model.weight_read_gbps.
RowBucketCosts CostsOfExpertRows(const RowBucketModel& model, int64_t hidden, int64_t intermediate);

// The same buckets (rounded counts, most rows first, at most `max_buckets`), chosen for the least
// modeled cost instead of by the quarter rule: each expert costs max(its bucket's rows rounded
// up to costs.tile_rows, costs.weight_bound) and each bucket costs.per_bucket. Experts whose counts round alike always
// share a bucket; among plans of equal cost the one with the fewest buckets. Exact (dynamic
// programming over the distinct rounded counts, O(max_buckets x distinct^2)).
std::vector<ExpertRowBucket> PlanExpertRowBuckets(std::span<const int32_t> offsets, int max_buckets,
                                                  int64_t row_alignment, const RowBucketCosts& costs);

}  // namespace expertmesh
