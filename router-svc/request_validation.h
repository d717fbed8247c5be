// Request validation for router-svc's Generate: checks the public request against the server's
// limits and the model (vocabulary, context length), tokenizes text prompts, and returns what the
// attention tier needs. Every refusal is INVALID_ARGUMENT with a message that names the field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"
#include "expertmesh/v1/router_service.pb.h"
#include "router-svc/attention_pool.h"

namespace expertmesh::router_service {

struct RequestLimits {
  // Largest max_tokens a request may ask for.
  uint32_t max_tokens_limit = 1024;
  // Longest prompt in tokens; 0 = the model's context length minus one.
  uint32_t max_prompt_tokens = 0;
  // Most stop strings per request and longest stop string in bytes.
  int max_stop_strings = 16;
  size_t max_stop_bytes = 256;
};

struct ValidatedRequest {
  std::vector<int32_t> prompt_ids;
  uint32_t max_tokens = 0;
  v1::SamplingParams sampling;  // top_p 0 already replaced by 1
  std::vector<std::string> stop;
};

// `tokenizer` encodes text prompts (adding BOS as the tokenizer specifies).
absl::StatusOr<ValidatedRequest> ValidateRequest(const v1::GenerateRequest& request, const RequestLimits& limits,
                                                 const AttentionModelInfo& model, const Tokenizer& tokenizer);

}  // namespace expertmesh::router_service
