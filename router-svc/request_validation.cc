// Field-by-field checks of GenerateRequest, in the order a client would fix them.
#include "router-svc/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace expertmesh::router_service {
namespace {

absl::Status CheckSampling(const v1::SamplingParams& sampling) {
  const float temperature = sampling.temperature();
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.temperature must be a finite number >= 0 (0 = greedy), got ", temperature));
  }
  const float top_p = sampling.top_p();
  if (std::isnan(top_p) || top_p < 0.0f || top_p > 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_p must be in (0, 1] (0 = 1), got ", top_p));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ValidatedRequest> ValidateRequest(const v1::GenerateRequest& request, const RequestLimits& limits,
                                                 const AttentionModelInfo& model, const Tokenizer& tokenizer) {
  ValidatedRequest validated;
  if (request.max_tokens() == 0) return absl::InvalidArgumentError("max_tokens must be at least 1");
  if (request.max_tokens() > limits.max_tokens_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens ", request.max_tokens(), " exceeds this server's limit of ", limits.max_tokens_limit));
  }
  validated.max_tokens = request.max_tokens();

  if (absl::Status valid = CheckSampling(request.sampling()); !valid.ok()) return valid;
  validated.sampling = request.sampling();
  if (validated.sampling.top_p() == 0.0f) validated.sampling.set_top_p(1.0f);

  if (request.stop_size() > limits.max_stop_strings) {
    return absl::InvalidArgumentError(
        absl::StrCat(request.stop_size(), " stop strings; at most ", limits.max_stop_strings, " are allowed"));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string& stop = request.stop(i);
    if (stop.empty()) return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is empty"));
    if (stop.size() > limits.max_stop_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop[", i, "] has ", stop.size(), " bytes; at most ", limits.max_stop_bytes, " are allowed"));
    }
    validated.stop.push_back(stop);
  }

  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (request.text().empty()) return absl::InvalidArgumentError("the prompt text is empty");
      auto encoded = tokenizer.Encode(request.text());
      if (!encoded.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("cannot tokenize the prompt: ", encoded.status().message()));
      }
      validated.prompt_ids.assign(encoded->begin(), encoded->end());
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return absl::InvalidArgumentError("the prompt's token_ids are empty");
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= model.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("prompt token id ", ids[i], " at position ", i,
                                                         " is outside the vocabulary [0, ", model.vocab_size, ")"));
        }
      }
      validated.prompt_ids.assign(ids.begin(), ids.end());
      break;
    }
    default:
      return absl::InvalidArgumentError("the request has no prompt: set text or token_ids");
  }
  if (validated.prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");

  const uint64_t context = model.max_position_embeddings;
  uint64_t max_prompt = limits.max_prompt_tokens;
  if (context > 0 && (max_prompt == 0 || max_prompt > context - 1)) max_prompt = context - 1;
  const uint64_t prompt_tokens = validated.prompt_ids.size();
  if (max_prompt > 0 && prompt_tokens > max_prompt) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", prompt_tokens, " tokens; at most ", max_prompt, " are allowed"));
  }
  if (context > 0 && prompt_tokens + validated.max_tokens > context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt_tokens, " tokens) + max_tokens (",
                                                   validated.max_tokens, ") exceeds the model's context of ",
                                                   context, " positions"));
  }
  return validated;
}

}  // namespace expertmesh::router_service
