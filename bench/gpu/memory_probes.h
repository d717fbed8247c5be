// Probes of gpu_expert_bench that measure the memory system and cuBLAS rather than an expert
// path: the decode's read pattern, reads and copies by size, and prefill's cuBLAS product forms.
// Each prints its rows (with ratios to the ceilings measured in the same run) to the report.
#pragma once

#include <cuda_runtime.h>

#include "bench/gpu/bench_report.h"

namespace expertmesh::bench {

// The decode read pattern vs a flat stream of the same bytes, then BenchReadSizes.
void BenchReadPatterns(const Ceilings& ceilings, cudaStream_t stream, Report& report);

// Prefill's expert products as a pointer batch, a strided batch and one dense GEMM.
void BenchGemmForms(const Ceilings& ceilings, cudaStream_t stream, Report& report);

}  // namespace expertmesh::bench
