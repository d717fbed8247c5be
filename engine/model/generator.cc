// Generator::Generate: prefill, sample, decode loop.
#include "engine/model/generator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"

namespace expertmesh {

absl::StatusOr<GenerationResult> Generator::Generate(std::span<const int32_t> prompt_ids,
                                                     const GenerateOptions& options,
                                                     const TokenCallback& on_token) const {
  if (prompt_ids.empty()) return absl::InvalidArgumentError("prompt is empty");
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 0, got ", options.max_new_tokens));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(options.sampling));
  LatentKvCache cache = model_.NewCache();
  GenerationResult result;
  SequenceInput input{&cache, prompt_ids, false};
  EXPERTMESH_ASSIGN_OR_RETURN(std::vector<Tensor> logits, model_.Step(std::span(&input, 1)));
  result.prompt_logits.assign(logits[0].values().begin(), logits[0].values().end());
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    absl::StatusOr<int32_t> token = sampler.Sample(logits[0].values());
    if (!token.ok()) {
      return absl::Status(token.status().code(),
                          absl::StrCat("sampling token ", step, ": ", token.status().message()));
    }
    result.token_ids.push_back(*token);
    if (on_token && !on_token(*token)) {
      result.stop_reason = StopReason::kCallback;
      break;
    }
    if (std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), *token) !=
        options.stop_token_ids.end()) {
      result.stop_reason = StopReason::kStopToken;
      break;
    }
    if (step + 1 == options.max_new_tokens) break;
    const int32_t next = *token;
    SequenceInput decode{&cache, std::span(&next, 1), false};
    EXPERTMESH_ASSIGN_OR_RETURN(logits, model_.Step(std::span(&decode, 1)));
  }
  return result;
}

}  // namespace expertmesh
