// RouteTokens: scoring, group limiting, top-k and weight normalization.
#include "engine/model/moe_gate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/top_k.h"

namespace expertmesh {

absl::StatusOr<RoutingResult> RouteTokens(const ModelConfig& config, std::span<const float> router_logits,
                                          int64_t num_tokens, std::span<const float> correction_bias) {
  const int64_t experts = config.n_routed_experts;
  const int64_t top_k = config.num_experts_per_tok;
  const int64_t groups = config.n_group;
  if (experts <= 0 || top_k <= 0 || top_k > experts || groups <= 0 || experts % groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad routing config: n_routed_experts=", experts,
                                                   " num_experts_per_tok=", top_k, " n_group=", groups));
  }
  if (static_cast<int64_t>(router_logits.size()) != num_tokens * experts) {
    return absl::InvalidArgumentError(absl::StrCat("router logits have ", router_logits.size(),
                                                   " values, expected ", num_tokens, " x ", experts));
  }
  const bool uses_bias = config.topk_method == TopKMethod::kNoAuxTc;
  if (uses_bias && !correction_bias.empty() && static_cast<int64_t>(correction_bias.size()) != experts) {
    return absl::InvalidArgumentError(absl::StrCat("e_score_correction_bias has ", correction_bias.size(),
                                                   " values, expected ", experts));
  }
  const bool group_limited = config.topk_method != TopKMethod::kGreedy && groups > 1;
  const int64_t per_group = experts / groups;
  const bool is_v3 = config.model_type != "deepseek_v2";

  RoutingResult result;
  result.num_tokens = num_tokens;
  result.top_k = top_k;
  result.expert_ids.resize(num_tokens * top_k);
  result.weights.resize(num_tokens * top_k);
  std::vector<float> scores(experts), choice(experts), group_scores(groups);
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::copy_n(router_logits.data() + t * experts, experts, scores.data());
    if (config.scoring_func == ScoringFunction::kSigmoid) {
      ops::SigmoidInPlace(scores);
    } else {
      ops::SoftmaxInPlace(scores);
    }
    choice = scores;
    if (uses_bias && !correction_bias.empty()) {
      for (int64_t e = 0; e < experts; ++e) choice[e] += correction_bias[e];
    }
    if (group_limited) {
      for (int64_t g = 0; g < groups; ++g) {
        std::span<const float> members(choice.data() + g * per_group, per_group);
        if (config.topk_method == TopKMethod::kNoAuxTc) {
          const std::vector<int32_t> best = ops::TopKIndices(members, 2);
          group_scores[g] = 0.0f;
          for (int32_t i : best) group_scores[g] += members[i];
        } else {
          group_scores[g] = *std::max_element(members.begin(), members.end());
        }
      }
      const std::vector<int32_t> kept = ops::TopKIndices(group_scores, config.topk_group);
      std::vector<bool> keep(groups, false);
      for (int32_t g : kept) keep[g] = true;
      for (int64_t e = 0; e < experts; ++e) {
        if (!keep[e / per_group]) choice[e] = -std::numeric_limits<float>::infinity();
      }
    }
    const std::vector<int32_t> chosen = ops::TopKIndices(choice, top_k);
    int32_t* ids = result.expert_ids.data() + t * top_k;
    float* weights = result.weights.data() + t * top_k;
    for (int64_t k = 0; k < top_k; ++k) {
      ids[k] = chosen[k];
      weights[k] = scores[chosen[k]];
    }
    if (is_v3 && config.norm_topk_prob) {
      float total = 0.0f;
      for (int64_t k = 0; k < top_k; ++k) total += weights[k];
      const float denominator = total + 1e-20f;
      for (int64_t k = 0; k < top_k; ++k) weights[k] /= denominator;
    }
    const float scaling = static_cast<float>(config.routed_scaling_factor);
    for (int64_t k = 0; k < top_k; ++k) weights[k] *= scaling;
  }
  return result;
}

}  // namespace expertmesh
