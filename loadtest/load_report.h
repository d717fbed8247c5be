// LoadReport: the summary of a run, like ghz's: requests/s, tokens/s, TTFT / TPOT / end-to-end
// latency percentiles (over successful requests), a latency histogram, status codes, error
// messages, and per blend+version counts and latencies. Renders as text and as JSON.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loadtest/load_options.h"
#include "loadtest/request_result.h"

namespace expertmesh::loadtest {

struct LatencySummary {
  int64_t count = 0;
  double min = 0, mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};
// Nearest-rank percentiles of `values` (seconds); all zero when empty.
LatencySummary Summarize(std::vector<double> values);

struct BlendSummary {
  std::string blend;  // "" when the response carried no usage event
  uint64_t version = 0;
  int64_t requests = 0;
  int64_t generated_tokens = 0;
  LatencySummary time_to_first_token, time_per_output_token, end_to_end;
};

struct HistogramBucket {
  double upper_seconds = 0;
  int64_t count = 0;
};

struct LoadReport {
  std::string target;
  std::string load_shape;
  std::string prompt_distribution, max_tokens_distribution;  // specs
  int64_t requests = 0, succeeded = 0, failed = 0, skipped = 0, cancelled_at_end = 0;
  bool interrupted = false;
  double wall_seconds = 0;
  double requests_per_second = 0;  // completed (any status) per wall second
  double generated_tokens_per_second = 0, prompt_tokens_per_second = 0;
  int64_t generated_tokens = 0, prompt_tokens = 0;
  LatencySummary time_to_first_token, time_per_output_token, end_to_end;
  std::vector<HistogramBucket> end_to_end_histogram;  // 10 equal-width buckets up to the slowest
  std::map<std::string, int64_t> status_codes;       // grpc-go spelling: "OK", "Unavailable", ...
  std::map<std::string, int64_t> errors;             // "Code: message" -> count
  std::vector<BlendSummary> blends;                  // by requests, descending
};

LoadReport BuildReport(const LoadOptions& options, const RunResult& run);
std::string FormatText(const LoadReport& report);
std::string FormatJson(const LoadReport& report);
// One line per request: start, e2e, ttft, tpot, tokens, code, blend, version.
std::string FormatRequestsCsv(const RunResult& run);

}  // namespace expertmesh::loadtest
