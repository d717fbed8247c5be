// RouteTokens on handcrafted router logits: V3 noaux_tc (bias changes selection, not weights;
// group limiting by top-2 sums; norm_topk_prob; scaling) and V2 greedy / group_limited_greedy.
#include "engine/model/moe_gate.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace expertmesh {
namespace {

float Logit(float probability) { return std::log(probability / (1.0f - probability)); }

ModelConfig V3Gate() {
  ModelConfig c;
  c.model_type = "deepseek_v3";
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.topk_method = TopKMethod::kNoAuxTc;
  c.scoring_func = ScoringFunction::kSigmoid;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  return c;
}

std::vector<int32_t> Sorted(std::vector<int32_t> ids) {
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(MoeGateTest, V3BiasChangesSelectionButNotWeights) {
  ModelConfig c = V3Gate();
  c.n_group = 1;
  c.topk_group = 1;
  // sigmoid scores: expert 0: 0.9, 1: 0.8, 2: 0.7, others 0.1
  std::vector<float> logits = {Logit(0.9f), Logit(0.8f), Logit(0.7f), Logit(0.1f),
                               Logit(0.1f), Logit(0.1f), Logit(0.1f), Logit(0.1f)};
  std::vector<float> no_bias(8, 0.0f);
  auto plain = RouteTokens(c, logits, 1, no_bias);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(Sorted(plain->expert_ids), (std::vector<int32_t>{0, 1}));

  std::vector<float> bias(8, 0.0f);
  bias[2] = 0.5f;  // 0.7 + 0.5 beats 0.8
  auto biased = RouteTokens(c, logits, 1, bias);
  ASSERT_TRUE(biased.ok());
  EXPECT_EQ(Sorted(biased->expert_ids), (std::vector<int32_t>{0, 2}));
  // Weights from unbiased scores 0.9 and 0.7, normalized, times 2.5.
  for (int k = 0; k < 2; ++k) {
    const float expected = (biased->expert_ids[k] == 0 ? 0.9f : 0.7f) / 1.6f * 2.5f;
    EXPECT_NEAR(biased->weights[k], expected, 1e-6);
  }
}

TEST(MoeGateTest, V3GroupsRankedBySumOfTopTwo) {
  ModelConfig c = V3Gate();  // 4 groups of 2, keep 2 groups, top-2 experts
  // group 0: {0.95, 0.05} sum 1.0; group 1: {0.6, 0.6} sum 1.2; group 2: {0.55, 0.55} sum 1.1;
  // group 3: {0.5, 0.1}. By max, group 0 would win; by top-2 sum groups 1 and 2 are kept.
  std::vector<float> probabilities = {0.95f, 0.05f, 0.6f, 0.6f, 0.55f, 0.55f, 0.5f, 0.1f};
  std::vector<float> logits;
  for (float p : probabilities) logits.push_back(Logit(p));
  auto r = RouteTokens(c, logits, 1, std::vector<float>(8, 0.0f));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Sorted(r->expert_ids), (std::vector<int32_t>{2, 3}));
  EXPECT_NEAR(r->weights[0] + r->weights[1], 2.5f, 1e-5);  // normalized then scaled
}

TEST(MoeGateTest, V3WithoutNormalizationOnlyScales) {
  ModelConfig c = V3Gate();
  c.norm_topk_prob = false;
  c.n_group = 1;
  c.topk_group = 1;
  std::vector<float> logits = {Logit(0.9f), Logit(0.8f), Logit(0.1f), Logit(0.1f),
                               Logit(0.1f), Logit(0.1f), Logit(0.1f), Logit(0.1f)};
  auto r = RouteTokens(c, logits, 1, std::vector<float>(8, 0.0f));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->expert_ids, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(r->weights[0], 0.9f * 2.5f, 1e-5);
  EXPECT_NEAR(r->weights[1], 0.8f * 2.5f, 1e-5);
}

TEST(MoeGateTest, V2GreedySoftmaxScaled) {
  ModelConfig c;
  c.model_type = "deepseek_v2";
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 2;
  c.topk_method = TopKMethod::kGreedy;
  c.scoring_func = ScoringFunction::kSoftmax;
  c.routed_scaling_factor = 16.0;
  c.norm_topk_prob = true;  // ignored for deepseek_v2, as in transformers' DeepseekV2Moe
  std::vector<float> logits = {std::log(0.1f), std::log(0.4f), std::log(0.2f), std::log(0.3f),
                               // second token
                               0.0f, 0.0f, 0.0f, 5.0f};
  auto r = RouteTokens(c, logits, 2, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->expert_ids[0], 1);
  EXPECT_EQ(r->expert_ids[1], 3);
  EXPECT_NEAR(r->weights[0], 0.4f * 16.0f, 1e-4);
  EXPECT_NEAR(r->weights[1], 0.3f * 16.0f, 1e-4);
  EXPECT_EQ(r->expert_ids[2], 3);
  EXPECT_EQ(r->expert_ids[3], 0);  // ties among the rest: lowest index
}

TEST(MoeGateTest, V2GroupLimitedGreedyUsesGroupMax) {
  ModelConfig c;
  c.model_type = "deepseek_v2";
  c.n_routed_experts = 6;
  c.num_experts_per_tok = 2;
  c.n_group = 3;
  c.topk_group = 1;
  c.topk_method = TopKMethod::kGroupLimitedGreedy;
  c.scoring_func = ScoringFunction::kSoftmax;
  c.routed_scaling_factor = 1.0;
  // probabilities: group 0 {0.30, 0.01}, group 1 {0.25, 0.25}, group 2 {0.1, 0.09}
  std::vector<float> p = {0.30f, 0.01f, 0.25f, 0.25f, 0.10f, 0.09f};
  std::vector<float> logits;
  for (float v : p) logits.push_back(std::log(v));
  auto r = RouteTokens(c, logits, 1, {});
  ASSERT_TRUE(r.ok());
  // Group 0 has the max (0.30) so it is kept alone even though group 1's sum is larger.
  EXPECT_EQ(Sorted(r->expert_ids), (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(r->weights[0], 0.30f, 1e-5);
  EXPECT_NEAR(r->weights[1], 0.01f, 1e-5);
}

TEST(MoeGateTest, RejectsBadSizes) {
  ModelConfig c = V3Gate();
  EXPECT_FALSE(RouteTokens(c, std::vector<float>(7), 1, {}).ok());
  EXPECT_FALSE(RouteTokens(c, std::vector<float>(8), 1, std::vector<float>(3)).ok());
}

}  // namespace
}  // namespace expertmesh
