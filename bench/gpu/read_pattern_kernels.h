// Read-only probes of the memory system for gpu_expert_bench: the same bytes read as the
// few-token expert kernels read weights (every warp streaming whole rows of its own), as a flat
// stream (consecutive warps on consecutive 2 KB chunks), or by bulk copies into shared memory, to
// tell the access pattern's cost from the kernels' own. Plain C++ header; `stream` is a cudaStream_t.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace expertmesh::bench {

// Reads `rows` rows of `row_bytes` (a multiple of 16) at `base` with one-wave grids of 2 x 512
// threads per multiprocessor: `whole_rows` true, warp w reads rows w, w + warps, ... each from
// start to end in steps of 2 KB; false, warp w reads 2 KB chunks w, w + warps, ... of the flat
// range. Writes one value per warp to `sink` (at least sm_count * 32 floats) so no load is dropped.
absl::Status LaunchReadPattern(const void* base, int64_t rows, int64_t row_bytes, bool whole_rows, float* sink,
                               int sm_count, void* stream);

// Reads `bytes` (a multiple of 16) at `base` with bulk copies (cp.async.bulk, Hopper's TMA engine)
// into shared memory instead of loads: `blocks_per_sm` one-warp blocks per multiprocessor, each
// keeping a ring of 4 chunks of 16 KB in flight (the chunks of the range dealt out round-robin),
// one thread folding a word of each chunk as it lands. Needs sm_90; `sink`: at least
// blocks_per_sm * sm_count floats.
absl::Status LaunchBulkRead(const void* base, int64_t bytes, int blocks_per_sm, float* sink, int sm_count,
                            void* stream);

}  // namespace expertmesh::bench
