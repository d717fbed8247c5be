// Benchmark timing on the device: CUDA events around each repetition, median reported, after
// warm-up runs (module load, handle creation and first-touch stay out of the numbers).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "absl/status/status.h"

namespace expertmesh::bench {

inline void CheckOrDie(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "FATAL %s: %s\n", what, std::string(status.message()).c_str());
    std::exit(1);
  }
}

inline void CheckCuda(cudaError_t error, const char* what) {
  if (error != cudaSuccess) {
    std::fprintf(stderr, "FATAL %s: %s\n", what, cudaGetErrorString(error));
    std::exit(1);
  }
}

// Median milliseconds of `repetitions` runs of `body(i)` on `stream`, after `warmup` runs.
// `body` returns a Status; a failure aborts the benchmark with its message.
inline double MedianMilliseconds(cudaStream_t stream, int warmup, int repetitions,
                                 const std::function<absl::Status(int)>& body) {
  for (int i = 0; i < warmup; ++i) CheckOrDie(body(i), "warm-up");
  CheckCuda(cudaStreamSynchronize(stream), "warm-up sync");
  std::vector<cudaEvent_t> events(repetitions + 1);
  for (cudaEvent_t& e : events) CheckCuda(cudaEventCreate(&e), "cudaEventCreate");
  CheckCuda(cudaEventRecord(events[0], stream), "cudaEventRecord");
  for (int i = 0; i < repetitions; ++i) {
    CheckOrDie(body(warmup + i), "timed run");
    CheckCuda(cudaEventRecord(events[i + 1], stream), "cudaEventRecord");
  }
  CheckCuda(cudaStreamSynchronize(stream), "timed sync");
  std::vector<float> times(repetitions);
  for (int i = 0; i < repetitions; ++i) CheckCuda(cudaEventElapsedTime(&times[i], events[i], events[i + 1]), "elapsed");
  for (cudaEvent_t& e : events) cudaEventDestroy(e);
  std::sort(times.begin(), times.end());
  return times[repetitions / 2];
}

}  // namespace expertmesh::bench
