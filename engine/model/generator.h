// Generator: prompt ids -> generated ids on one DeepseekModel with a fresh KV cache: one prefill
// step, then one decode step per token, sampling with Sampler, stopping at max_new_tokens or a
// stop token (included in the output), with a per-token callback for streaming.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/sampler.h"

namespace expertmesh {

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingParams sampling;  // greedy by default
  std::vector<int32_t> stop_token_ids;
};

enum class StopReason { kMaxNewTokens, kStopToken, kCallback };

struct GenerationResult {
  std::vector<int32_t> token_ids;     // generated ids (not the prompt)
  StopReason stop_reason = StopReason::kMaxNewTokens;
  std::vector<float> prompt_logits;   // logits at the last prompt position
};

// Called with each generated token; return false to stop after it.
using TokenCallback = std::function<bool(int32_t token_id)>;

class Generator {
 public:
  explicit Generator(const DeepseekModel& model) : model_(model) {}

  absl::StatusOr<GenerationResult> Generate(std::span<const int32_t> prompt_ids, const GenerateOptions& options,
                                            const TokenCallback& on_token = nullptr) const;

 private:
  const DeepseekModel& model_;
};

}  // namespace expertmesh
