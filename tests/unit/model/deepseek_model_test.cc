// DeepseekModel on in-memory random weights: naive vs absorbed MLA, KV-cache decode vs full
// re-forward, batched steps vs one-by-one, chunked prefill, rollback and input errors.
#include "engine/model/deepseek_model.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/model/model_test_util.h"

namespace expertmesh {
namespace {

using testing::RandomExperts;
using testing::RandomModelWeights;
using testing::RelativeMaxError;

struct Fixture {
  ModelConfig config;
  std::unique_ptr<LocalRoutedExperts> experts;
  std::unique_ptr<DeepseekModel> model;
};

Fixture Build(const ModelConfig& config, ModelOptions options = {}, uint64_t seed = 7) {
  Fixture f;
  f.config = config;
  f.experts = RandomExperts(config, seed + 1);
  auto model = DeepseekModel::Create(config, RandomModelWeights(config, seed), f.experts.get(), options);
  EXPECT_TRUE(model.ok()) << model.status();
  f.model = std::move(model).value();
  return f;
}

const std::vector<int32_t> kPrompt = {3, 17, 42, 5, 9, 60, 1, 33, 28, 11};

// Logits of every position of `ids` in one prefill step.
std::vector<float> FullForward(const DeepseekModel& model, const std::vector<int32_t>& ids) {
  LatentKvCache cache = model.NewCache();
  SequenceInput input{&cache, ids, true};
  auto logits = model.Step(std::span(&input, 1));
  EXPECT_TRUE(logits.ok()) << logits.status();
  return std::vector<float>((*logits)[0].values().begin(), (*logits)[0].values().end());
}

// Prefill the first `prefill` tokens, then decode the rest one by one; logits for each position
// from `prefill - 1` on.
std::vector<float> IncrementalForward(const DeepseekModel& model, const std::vector<int32_t>& ids, size_t prefill) {
  LatentKvCache cache = model.NewCache();
  std::vector<float> all;
  SequenceInput input{&cache, std::span(ids.data(), prefill), false};
  auto logits = model.Step(std::span(&input, 1));
  EXPECT_TRUE(logits.ok()) << logits.status();
  all.insert(all.end(), (*logits)[0].values().begin(), (*logits)[0].values().end());
  for (size_t i = prefill; i < ids.size(); ++i) {
    SequenceInput decode{&cache, std::span(ids.data() + i, 1), false};
    logits = model.Step(std::span(&decode, 1));
    EXPECT_TRUE(logits.ok()) << logits.status();
    all.insert(all.end(), (*logits)[0].values().begin(), (*logits)[0].values().end());
  }
  EXPECT_EQ(cache.length(), static_cast<int64_t>(ids.size()));
  return all;
}

class ModelVariants : public ::testing::TestWithParam<bool> {
 protected:
  ModelConfig Config() const { return GetParam() ? testing::TinyV3Config() : testing::TinyV2LiteConfig(); }
};

TEST_P(ModelVariants, NaiveAndAbsorbedDecodeAgree) {
  ModelOptions naive{AttentionAlgorithm::kNaive, AttentionAlgorithm::kNaive};
  ModelOptions absorbed{AttentionAlgorithm::kNaive, AttentionAlgorithm::kAbsorbed};
  Fixture a = Build(Config(), naive);
  Fixture b = Build(Config(), absorbed);
  const std::vector<float> la = IncrementalForward(*a.model, kPrompt, 3);
  const std::vector<float> lb = IncrementalForward(*b.model, kPrompt, 3);
  EXPECT_LE(RelativeMaxError(lb, la), 1e-5);
}

TEST_P(ModelVariants, NaiveAndAbsorbedPrefillAgree) {
  Fixture a = Build(Config(), {AttentionAlgorithm::kNaive, AttentionAlgorithm::kNaive});
  Fixture b = Build(Config(), {AttentionAlgorithm::kAbsorbed, AttentionAlgorithm::kAbsorbed});
  EXPECT_LE(RelativeMaxError(FullForward(*b.model, kPrompt), FullForward(*a.model, kPrompt)), 1e-5);
}

TEST_P(ModelVariants, IncrementalDecodeEqualsFullReforward) {
  Fixture f = Build(Config());
  const std::vector<float> full = FullForward(*f.model, kPrompt);
  const std::vector<float> incremental = IncrementalForward(*f.model, kPrompt, 4);
  const int64_t vocab = f.config.vocab_size;
  // incremental holds positions 3..9; full holds 0..9.
  std::span<const float> tail(full.data() + 3 * vocab, full.size() - 3 * vocab);
  ASSERT_EQ(incremental.size(), tail.size());
  EXPECT_LE(RelativeMaxError(incremental, tail), 1e-5);
}

TEST_P(ModelVariants, ChunkedPrefillEqualsSinglePrefill) {
  Fixture f = Build(Config());
  const std::vector<float> full = FullForward(*f.model, kPrompt);
  LatentKvCache cache = f.model->NewCache();
  SequenceInput first{&cache, std::span(kPrompt.data(), 6), true};
  auto a = f.model->Step(std::span(&first, 1));
  ASSERT_TRUE(a.ok()) << a.status();
  SequenceInput second{&cache, std::span(kPrompt.data() + 6, 4), true};
  auto b = f.model->Step(std::span(&second, 1));
  ASSERT_TRUE(b.ok()) << b.status();
  std::vector<float> chunked((*a)[0].values().begin(), (*a)[0].values().end());
  chunked.insert(chunked.end(), (*b)[0].values().begin(), (*b)[0].values().end());
  EXPECT_LE(RelativeMaxError(chunked, full), 1e-5);
}

TEST_P(ModelVariants, BatchedStepEqualsOneByOne) {
  Fixture f = Build(Config());
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {9}, {40, 41, 42}};
  // One by one.
  std::vector<std::vector<float>> expected;
  for (const auto& p : prompts) {
    expected.push_back(IncrementalForward(*f.model, p, p.size()));
  }
  // Together; then one batched decode step with different lengths per sequence.
  std::vector<LatentKvCache> caches;
  for (size_t i = 0; i < prompts.size(); ++i) caches.push_back(f.model->NewCache());
  std::vector<SequenceInput> inputs;
  for (size_t i = 0; i < prompts.size(); ++i) inputs.push_back({&caches[i], prompts[i], false});
  auto together = f.model->Step(inputs);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_LE(RelativeMaxError((*together)[i].values(), expected[i]), 1e-5) << "sequence " << i;
  }
  // Mixed step: sequence 0 decodes one token while sequence 1 prefills a chunk of 3.
  const std::vector<int32_t> next0 = {7}, next1 = {8, 9, 10};
  std::vector<SequenceInput> mixed = {{&caches[0], next0, false}, {&caches[1], next1, true}};
  auto mixed_logits = f.model->Step(mixed);
  ASSERT_TRUE(mixed_logits.ok()) << mixed_logits.status();
  std::vector<int32_t> seq0 = prompts[0];
  seq0.push_back(7);
  std::vector<int32_t> seq1 = prompts[1];
  seq1.insert(seq1.end(), next1.begin(), next1.end());
  const std::vector<float> full0 = FullForward(*f.model, seq0);
  const std::vector<float> full1 = FullForward(*f.model, seq1);
  const int64_t vocab = f.config.vocab_size;
  EXPECT_LE(RelativeMaxError((*mixed_logits)[0].values(),
                             std::span<const float>(full0.data() + (seq0.size() - 1) * vocab, vocab)), 1e-5);
  EXPECT_LE(RelativeMaxError((*mixed_logits)[1].values(),
                             std::span<const float>(full1.data() + 1 * vocab, 3 * vocab)), 1e-5);
  EXPECT_EQ((*mixed_logits)[1].dim(0), 3);
}

INSTANTIATE_TEST_SUITE_P(V3AndV2Lite, ModelVariants, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "V3WithQLora" : "V2LiteWithoutQLora"; });

TEST(DeepseekModelTest, RoutingObserverSeesEveryMoeLayer) {
  Fixture f = Build(testing::TinyV3Config());
  LatentKvCache cache = f.model->NewCache();
  SequenceInput input{&cache, kPrompt, false};
  std::vector<int64_t> layers;
  RoutingObserver observer = [&](int64_t layer, std::span<const int32_t> ids, int64_t tokens, int64_t top_k) {
    layers.push_back(layer);
    EXPECT_EQ(tokens, static_cast<int64_t>(kPrompt.size()));
    EXPECT_EQ(static_cast<int64_t>(ids.size()), tokens * top_k);
  };
  ASSERT_TRUE(f.model->Step(std::span(&input, 1), &observer).ok());
  EXPECT_EQ(layers, (std::vector<int64_t>{1, 2}));
}

TEST(DeepseekModelTest, MissingExpertFailsAndRollsBackCaches) {
  const ModelConfig config = testing::TinyV3Config();
  LocalRoutedExperts no_experts(config.hidden_size, config.moe_intermediate_size);
  auto model = DeepseekModel::Create(config, RandomModelWeights(config, 1), &no_experts);
  ASSERT_TRUE(model.ok());
  LatentKvCache cache = (*model)->NewCache();
  SequenceInput input{&cache, kPrompt, false};
  auto result = (*model)->Step(std::span(&input, 1));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound) << result.status();
  EXPECT_EQ(cache.length(), 0);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) EXPECT_EQ(cache.LayerLength(layer), 0);
}

TEST(DeepseekModelTest, RejectsBadInputs) {
  Fixture f = Build(testing::TinyV3Config());
  LatentKvCache cache = f.model->NewCache();
  const std::vector<int32_t> bad = {1, 64};
  SequenceInput input{&cache, bad, false};
  EXPECT_EQ(f.model->Step(std::span(&input, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  SequenceInput empty{&cache, {}, false};
  EXPECT_EQ(f.model->Step(std::span(&empty, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<SequenceInput> shared = {{&cache, kPrompt, false}, {&cache, kPrompt, false}};
  EXPECT_EQ(f.model->Step(shared).status().code(), absl::StatusCode::kInvalidArgument);
  LatentKvCache wrong(2, 16, 8);
  SequenceInput mismatched{&wrong, kPrompt, false};
  EXPECT_EQ(f.model->Step(std::span(&mismatched, 1)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DeepseekModelTest, RejectsBadWeightShapes) {
  const ModelConfig config = testing::TinyV3Config();
  auto experts = RandomExperts(config, 2);
  ModelWeights weights = RandomModelWeights(config, 1);
  weights.layers[1].attention.kv_b_proj = Tensor({4, 4});
  auto model = DeepseekModel::Create(config, std::move(weights), experts.get());
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("model.layers.1.self_attn.kv_b_proj.weight"), std::string::npos)
      << model.status();

  ModelWeights missing = RandomModelWeights(config, 1);
  missing.norm = Tensor();
  auto no_norm = DeepseekModel::Create(config, std::move(missing), experts.get());
  EXPECT_NE(no_norm.status().message().find("model.norm.weight is missing"), std::string::npos) << no_norm.status();

  EXPECT_FALSE(DeepseekModel::Create(config, RandomModelWeights(config, 1), nullptr).ok());

  MlpWeights wrong_expert;
  wrong_expert.gate_proj = Tensor({3, 3});
  EXPECT_EQ(experts->AddExpert(1, 0, std::move(wrong_expert)).code(), absl::StatusCode::kInvalidArgument);

  ModelConfig bad_groups = config;
  bad_groups.n_group = 3;
  EXPECT_FALSE(NonExpertWeightSpecs(bad_groups).ok());
}

TEST(DeepseekModelTest, TiedEmbeddingsUseEmbedTokens) {
  ModelConfig config = testing::TinyV3Config();
  config.tie_word_embeddings = true;
  auto experts = RandomExperts(config, 2);
  ModelWeights weights = RandomModelWeights(config, 1);
  EXPECT_TRUE(weights.lm_head.empty());
  auto model = DeepseekModel::Create(config, std::move(weights), experts.get());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(FullForward(**model, kPrompt).size(), kPrompt.size() * config.vocab_size);
}

}  // namespace
}  // namespace expertmesh
