// LoadRunner: drives RouterService.Generate at the configured load over the gRPC callback API:
// closed loop keeps `concurrency` calls running, open loop starts calls at scheduled arrival
// times (constant or Poisson) regardless of completions. Stops at the duration or request
// limit (or a stop request), lets in-flight calls drain up to the drain timeout, then cancels
// them. Reports progress periodically from its own thread.
#pragma once

#include <atomic>
#include <functional>
#include <random>

#include "absl/status/statusor.h"
#include "expertmesh/v1/router_service.pb.h"
#include "loadtest/load_options.h"
#include "loadtest/request_result.h"

namespace expertmesh::loadtest {

struct Progress {
  double elapsed_seconds = 0;
  int64_t started = 0;
  int64_t finished = 0;
  int64_t failed = 0;
  int64_t in_flight = 0;
  int64_t skipped = 0;
  int64_t generated_tokens = 0;
  // Over the requests that finished since the previous report (negative if none).
  double recent_ttft_p50_seconds = -1;
  double recent_e2e_p50_seconds = -1;
};

// Builds request `index` of a run: prompt, max_tokens, sampling, blend or ab_key.
expertmesh::v1::GenerateRequest BuildRequest(const LoadOptions& options, int64_t index, std::mt19937_64& random,
                                             int* prompt_tokens);

class LoadRunner {
 public:
  explicit LoadRunner(LoadOptions options) : options_(std::move(options)) {}

  // Runs to completion. `on_progress` (may be empty) is called every progress interval from a
  // separate thread. `stop` (may be null) ends the load early when it becomes true.
  absl::StatusOr<RunResult> Run(const std::function<void(const Progress&)>& on_progress,
                                const std::atomic<bool>* stop = nullptr);

 private:
  LoadOptions options_;
};

}  // namespace expertmesh::loadtest
