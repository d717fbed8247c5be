// RequestResult: what the load tester measured for one Generate call (client-side times from
// the moment the call started), and RunResult: every request of a run plus run-level counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

namespace expertmesh::loadtest {

struct RequestResult {
  // Since the run began.
  double start_seconds = 0;
  double end_to_end_seconds = 0;
  // Until the first delta carrying tokens or text; negative when none came.
  double time_to_first_token_seconds = -1;
  // The Usage event's prompt_tokens when it came, else what was sent (ids, or words of text).
  int prompt_tokens = 0;
  int max_tokens = 0;
  // Generated tokens: the Usage event's completion_tokens, else the tokens counted in deltas.
  int64_t generated_tokens = 0;
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error_message;
  // From the Usage event ("" / 0 when none came).
  bool has_usage = false;
  std::string blend;
  uint64_t blend_version = 0;
  std::string finish_reason;
  // What the request asked for ("" = router's choice).
  std::string requested_blend;

  bool ok() const { return code == grpc::StatusCode::OK; }
  // (e2e - TTFT) / (tokens - 1); negative when undefined (fewer than 2 tokens).
  double TimePerOutputToken() const {
    if (generated_tokens < 2 || time_to_first_token_seconds < 0) return -1;
    return (end_to_end_seconds - time_to_first_token_seconds) / static_cast<double>(generated_tokens - 1);
  }
};

struct RunResult {
  std::vector<RequestResult> requests;
  double wall_seconds = 0;
  // Open loop: requests that were due while max_in_flight were running (not sent).
  int64_t skipped = 0;
  // Requests still running when the drain timeout ended (cancelled; also in `requests`).
  int64_t cancelled_at_end = 0;
  // Stopped early by a signal.
  bool interrupted = false;
};

}  // namespace expertmesh::loadtest
