// Groups the experts of one batch by how many rows (token slots) each got, for padded batched
// GEMMs: every expert in a bucket is padded to the bucket's row count, so a few hot experts do not
// make every cold one compute (and write) as many rows as they do, and buckets are planned for the
// least modeled time (padded rows against the cost of one more batch of launches).
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

// What PlanExpertRowBuckets minimises, in rows of one expert's products (the time one more row
// takes where the products are bound by arithmetic).
struct RowBucketCosts {
  int64_t per_bucket = 0;    // one more bucket: its launches and its last, partly filled wave
  int64_t weight_bound = 0;  // an expert's products never cost less than this many rows (reading its
                             // weights takes as long), so padding up to it is free
};

// Speeds of one GPU that give RowBucketCosts for an expert shape. Defaults from an H100
// (bench/RESULTS.md): the batched products at 606-663 TFLOP/s (run 13), copy bandwidth ~3040
// GB/s. The bucket overhead is what measured best in run 14 among 11.5 and 40 us: 40 us was never
// slower than planning without it (the quarter rule it replaced: a new bucket where padding would
// waste over a quarter of the rows) at 256-16384 tokens; 11.5 us made V2-Lite's 4096 tokens 2.6%
// slower (three buckets, each with its own last partly filled wave of tiles).
struct RowBucketModel {
  double bucket_overhead_us = 40;
  double gemm_tflops = 640;
  double weight_read_gbps = 3000;
};

// An expert of `hidden` x `intermediate` (gate, up and down in bf16): a row costs 6 x hidden x
// intermediate flops at model.gemm_tflops, its weights 6 x hidden x intermediate bytes at
// model.weight_read_gbps.
RowBucketCosts CostsOfExpertRows(const RowBucketModel& model, int64_t hidden, int64_t intermediate);

// `offsets[e]..offsets[e + 1]` are local expert e's rows (offsets non-decreasing). Experts with no
// rows are left out. Row counts are first rounded up to a multiple of `row_alignment` (>= 1), so
// the GEMM shapes repeat from batch to batch (cuBLAS picks and loads its kernels per shape: a
// shape seen for the first time costs far more than the product), and experts whose counts round
// alike always share a bucket. Buckets come most rows first, at most `max_buckets` (>= 1), chosen
// for the least modeled cost: each expert costs max(its bucket's rows, costs.weight_bound), each
// bucket costs.per_bucket; among plans of equal cost the one with the fewest buckets. Exact
// (dynamic programming over the distinct rounded counts, O(max_buckets x distinct^2)).
std::vector<ExpertRowBucket> PlanExpertRowBuckets(std::span<const int32_t> offsets, int max_buckets,
                                                  int64_t row_alignment, const RowBucketCosts& costs);

}  // namespace expertmesh
