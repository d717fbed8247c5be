// MoE routing: router logits -> per-token expert ids and gate weights, for every method of the
// family. V3 (noaux_tc): sigmoid scores; selection on scores + e_score_correction_bias, groups
// ranked by the sum of their top-2, best topk_group groups kept; weights are the unbiased scores,
// normalized if norm_topk_prob (+1e-20), times routed_scaling_factor. V2: softmax scores, greedy
// or group_limited_greedy (groups ranked by their max); weights times routed_scaling_factor.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/model_config.h"

namespace expertmesh {

struct RoutingResult {
  int64_t num_tokens = 0;
  int64_t top_k = 0;
  std::vector<int32_t> expert_ids;  // [num_tokens, top_k], best first
  std::vector<float> weights;       // [num_tokens, top_k], final gate weights
};

// `router_logits` is [num_tokens, n_routed_experts] (activations * gate.weight^T, float32).
// `correction_bias` is e_score_correction_bias ([n_routed_experts]) for noaux_tc, else empty.
//
// Notes on matching transformers 5.x exactly:
//  - experts of dropped groups are excluded outright (DeepSeek's -inf); transformers fills them
//    with 0.0, which is the same whenever kept scores (+bias) are positive — always for softmax.
//  - deepseek_v2: transformers' DeepseekV2Moe always multiplies by routed_scaling_factor and
//    ignores norm_topk_prob; so does this (the published V2 checkpoints have norm_topk_prob=false,
//    where DeepSeek's own code does the same).
absl::StatusOr<RoutingResult> RouteTokens(const ModelConfig& config, std::span<const float> router_logits,
                                          int64_t num_tokens, std::span<const float> correction_bias);

}  // namespace expertmesh
