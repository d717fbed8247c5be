// Latency-over-time plot: a PNG with end-to-end latency and TTFT of every request against its
// start time (top) and completed requests and generated tokens per second (bottom), drawn by
// gnuplot (Debian gnuplot-nox) from data and a script written next to the PNG.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "loadtest/request_result.h"

namespace expertmesh::loadtest {

// Writes `png_path` (plus png_path + ".dat", ".gp" and gnuplot's ".log", kept for inspection). FAILED_PRECONDITION
// when gnuplot is not installed; INTERNAL when it fails.
absl::Status WriteLatencyPlot(const RunResult& run, const std::string& png_path, const std::string& title);

}  // namespace expertmesh::loadtest
