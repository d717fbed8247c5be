// Sampler: parameter validation, greedy, NaN handling, seeded determinism, top-p edge cases;
// Generator: stop tokens, callback, max_new_tokens.
#include "engine/model/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "engine/model/generator.h"
#include "gtest/gtest.h"
#include "tests/unit/model/model_test_util.h"

namespace expertmesh {
namespace {

TEST(SamplerTest, ValidatesParams) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (SamplingParams bad : {SamplingParams{-0.1f, 1.0f, 0}, SamplingParams{nan, 1.0f, 0},
                             SamplingParams{1.0f, 0.0f, 0}, SamplingParams{1.0f, 1.5f, 0},
                             SamplingParams{1.0f, nan, 0}, SamplingParams{INFINITY, 1.0f, 0}}) {
    EXPECT_EQ(Sampler::Create(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad.temperature << " " << bad.top_p;
  }
  EXPECT_TRUE(Sampler::Create({0.0f, 1.0f, 0}).ok());
  EXPECT_TRUE(Sampler::Create({0.7f, 0.01f, 0}).ok());
}

TEST(SamplerTest, GreedyTakesFirstMaximum) {
  auto sampler = Sampler::Create({});
  ASSERT_TRUE(sampler.ok());
  std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(*sampler->Sample(logits), 1);
}

TEST(SamplerTest, NanOrInfinityIsAnError) {
  auto sampler = Sampler::Create({});
  std::vector<float> logits = {0.5f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_EQ(sampler->Sample(logits).status().code(), absl::StatusCode::kInvalidArgument);
  logits[1] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(sampler->Sample(logits).ok());
  std::vector<float> all_masked(3, -std::numeric_limits<float>::infinity());
  EXPECT_FALSE(sampler->Sample(all_masked).ok());
  EXPECT_FALSE(sampler->Sample({}).ok());
}

TEST(SamplerTest, SeededSamplingIsDeterministic) {
  std::vector<float> logits = {1.0f, 1.1f, 0.9f, 1.05f, 0.2f};
  auto draw = [&](uint64_t seed) {
    auto s = Sampler::Create({1.0f, 1.0f, seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(*s->Sample(logits));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(SamplerTest, SplitMix64KnownValues) {
  // Reference values of splitmix64 seeded with 0 (Vigna's reference implementation).
  SplitMix64 random(0);
  EXPECT_EQ(random.Next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(random.Next(), 0x6e789e6aa1b965f4ULL);
}

TEST(SamplerTest, TopPKeepsSmallestNucleus) {
  // probabilities ~ {0.5, 0.3, 0.2}: top_p 0.5 keeps only token 0; top_p 0.75 keeps {0, 1}.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto only_first = Sampler::Create({1.0f, 0.5f, seed});
    EXPECT_EQ(*only_first->Sample(logits), 0);
    auto two = Sampler::Create({1.0f, 0.75f, seed});
    EXPECT_NE(*two->Sample(logits), 2);
  }
  // Tiny top_p still keeps one token; top_p = 1 can reach every token.
  auto tiny = Sampler::Create({1.0f, 1e-6f, 3});
  EXPECT_EQ(*tiny->Sample(logits), 0);
  auto full = Sampler::Create({1.0f, 1.0f, 11});
  std::map<int32_t, int> counts;
  for (int i = 0; i < 2000; ++i) counts[*full->Sample(logits)]++;
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_NEAR(counts[0] / 2000.0, 0.5, 0.05);
  // -inf logits are never sampled.
  std::vector<float> masked = {0.0f, -std::numeric_limits<float>::infinity(), 0.0f};
  for (int i = 0; i < 100; ++i) EXPECT_NE(*full->Sample(masked), 1);
}

TEST(SamplerTest, LowTemperatureApproachesGreedy) {
  std::vector<float> logits = {1.0f, 3.0f, 2.9f};
  auto s = Sampler::Create({0.01f, 1.0f, 5});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(*s->Sample(logits), 1);
}

class GeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::TinyV3Config();
    experts_ = testing::RandomExperts(config_, 3);
    model_ = DeepseekModel::Create(config_, testing::RandomModelWeights(config_, 4), experts_.get()).value();
  }
  ModelConfig config_;
  std::unique_ptr<LocalRoutedExperts> experts_;
  std::unique_ptr<DeepseekModel> model_;
};

TEST_F(GeneratorTest, GreedyMatchesArgmaxOfFullForward) {
  Generator generator(*model_);
  const std::vector<int32_t> prompt = {5, 6, 7};
  GenerateOptions options;
  options.max_new_tokens = 6;
  std::vector<int32_t> streamed;
  auto result = generator.Generate(prompt, options, [&](int32_t t) { streamed.push_back(t); return true; });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->token_ids.size(), 6u);
  EXPECT_EQ(streamed, result->token_ids);
  // Re-derive with full forwards (no cache reuse).
  std::vector<int32_t> sequence = prompt;
  for (int i = 0; i < 6; ++i) {
    LatentKvCache cache = model_->NewCache();
    SequenceInput input{&cache, sequence, false};
    auto logits = model_->Step(std::span(&input, 1));
    ASSERT_TRUE(logits.ok());
    sequence.push_back(ArgMax((*logits)[0].values()));
  }
  EXPECT_EQ(std::vector<int32_t>(sequence.begin() + 3, sequence.end()), result->token_ids);
  EXPECT_EQ(result->prompt_logits.size(), static_cast<size_t>(config_.vocab_size));
}

TEST_F(GeneratorTest, StopsAtStopTokenAndCallback) {
  Generator generator(*model_);
  const std::vector<int32_t> prompt = {5, 6, 7};
  GenerateOptions options;
  options.max_new_tokens = 6;
  auto free_run = generator.Generate(prompt, options);
  ASSERT_TRUE(free_run.ok());
  options.stop_token_ids = {free_run->token_ids[2]};
  auto stopped = generator.Generate(prompt, options);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->stop_reason, StopReason::kStopToken);
  EXPECT_LE(stopped->token_ids.size(), 3u);
  EXPECT_EQ(stopped->token_ids.back(), free_run->token_ids[2]);

  options.stop_token_ids.clear();
  int calls = 0;
  auto cancelled = generator.Generate(prompt, options, [&](int32_t) { return ++calls < 2; });
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->stop_reason, StopReason::kCallback);
  EXPECT_EQ(cancelled->token_ids.size(), 2u);

  options.sampling = {0.8f, 0.9f, 7};
  auto a = generator.Generate(prompt, options);
  auto b = generator.Generate(prompt, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->token_ids, b->token_ids);
  options.sampling.top_p = 2.0f;
  EXPECT_EQ(generator.Generate(prompt, options).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(generator.Generate({}, GenerateOptions{}).ok());
}

}  // namespace
}  // namespace expertmesh
