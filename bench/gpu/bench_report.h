// Shared pieces of gpu_expert_bench's files: the report every measurement line goes to (stdout
// and an optional TSV) and the two ceilings measured first, which every ratio is taken against.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace expertmesh::bench {

// Measurement lines as they are printed, kept in order (and written to `tsv` when set).
struct Report {
  std::vector<std::string> rows;
  FILE* tsv = nullptr;
  void Add(const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    rows.push_back(line);
    if (tsv != nullptr) std::fprintf(tsv, "%s\n", line.c_str());
  }
};

struct Ceilings {
  double copy_gbps = 0;    // device copy of 2 GiB, bytes read + written per second
  double gemm_tflops = 0;  // cuBLAS bf16 8192^3 on random data
};

}  // namespace expertmesh::bench
