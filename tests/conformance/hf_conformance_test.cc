// The CPU engine against Hugging Face transformers: for every fixture (tiny V3, sharded V2-Lite,
// group-limited V2, FP8 V3 and the bundled bf16 prose model) the logits at every prompt position,
// the router's top-k experts per MoE layer and 16 greedy tokens must match reference.json.
// Tolerances per position: max |diff| <= 1e-4 for every fixture, and for bf16 / FP8 checkpoints
// also max |diff| / max |reference| <= 2e-2. (HF computed in float32 from the very values the
// engine reads — bf16 widened, FP8 dequantized — so the absolute bound applies to them too.)
#include <cstdio>
#include <string>
#include <vector>

#include "engine/model/generator.h"
#include "engine/model/weight_loader.h"
#include "gtest/gtest.h"
#include "tests/conformance/reference_fixture.h"

namespace expertmesh::conformance {
namespace {

struct FixtureSpec {
  std::string name;       // test name
  std::string directory;  // relative to the source tree
  bool float32_weights;   // else bf16 / FP8: relative tolerance
};

void PrintTo(const FixtureSpec& spec, std::ostream* out) { *out << spec.name; }

constexpr double kAbsTolerance = 1e-4;
constexpr double kLowPrecisionRelTolerance = 2e-2;

// Checks one position's error against the fixture's tolerances.
::testing::AssertionResult WithinTolerance(const LogitError& error, const FixtureSpec& spec) {
  if (error.max_abs > kAbsTolerance) {
    return ::testing::AssertionFailure() << "max |diff| " << error.max_abs << " > " << kAbsTolerance;
  }
  if (!spec.float32_weights && error.relative > kLowPrecisionRelTolerance) {
    return ::testing::AssertionFailure() << "relative error " << error.relative << " > " << kLowPrecisionRelTolerance;
  }
  return ::testing::AssertionSuccess();
}

class HfConformance : public ::testing::TestWithParam<FixtureSpec> {
 protected:
  void SetUp() override {
    const std::filesystem::path directory = SourceDir() / GetParam().directory;
    reference_ = LoadReference(directory / "reference.json");
    auto loaded = LoadModelFromDirectory(directory);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded_ = std::move(loaded).value();
  }
  Reference reference_;
  LoadedModel loaded_;
};

TEST_P(HfConformance, LogitsAndRoutingAtEveryPromptPosition) {
  const DeepseekModel& model = *loaded_.model;
  double worst_abs = 0.0, worst_rel = 0.0;
  for (size_t c = 0; c < reference_.cases.size(); ++c) {
    const ReferenceCase& expected = reference_.cases[c];
    std::map<int64_t, std::vector<std::vector<int32_t>>> routes;  // layer -> [position] ascending ids
    RoutingObserver observer = [&](int64_t layer, std::span<const int32_t> ids, int64_t tokens, int64_t top_k) {
      for (int64_t t = 0; t < tokens; ++t) {
        std::vector<int32_t> chosen(ids.begin() + t * top_k, ids.begin() + (t + 1) * top_k);
        std::sort(chosen.begin(), chosen.end());
        routes[layer].push_back(std::move(chosen));
      }
    };
    LatentKvCache cache = model.NewCache();
    SequenceInput input{&cache, expected.prompt_ids, /*all_logits=*/true};
    auto logits = model.Step(std::span(&input, 1), &observer);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const Tensor& got = (*logits)[0];
    ASSERT_EQ(got.dim(0), static_cast<int64_t>(expected.prompt_ids.size()));
    ASSERT_EQ(got.dim(1), loaded_.config.vocab_size);
    for (size_t position = 0; position < expected.logits.size(); ++position) {
      const LogitError error = CompareLogits(got.row(position), expected.logits[position]);
      worst_abs = std::max(worst_abs, error.max_abs);
      worst_rel = std::max(worst_rel, error.relative);
      EXPECT_TRUE(WithinTolerance(error, GetParam())) << "case " << c << " position " << position;
    }
    ASSERT_EQ(routes.size(), expected.router_topk.size()) << "MoE layers observed";
    for (const auto& [layer, per_position] : expected.router_topk) {
      ASSERT_TRUE(routes.contains(layer)) << "no routing for layer " << layer;
      EXPECT_EQ(routes[layer], per_position) << "case " << c << " layer " << layer;
    }
  }
  std::printf("[conformance] %s: logits max|diff| %.3g, max relative %.3g (over %zu cases)\n",
              GetParam().name.c_str(), worst_abs, worst_rel, reference_.cases.size());
  RecordProperty("max_abs_error", std::to_string(worst_abs));
  RecordProperty("max_relative_error", std::to_string(worst_rel));
}

TEST_P(HfConformance, SixteenGreedyTokens) {
  Generator generator(*loaded_.model);
  for (size_t c = 0; c < reference_.cases.size(); ++c) {
    const ReferenceCase& expected = reference_.cases[c];
    GenerateOptions options;
    options.max_new_tokens = static_cast<int64_t>(expected.greedy_ids.size());
    auto result = generator.Generate(expected.prompt_ids, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->token_ids, expected.greedy_ids) << "case " << c;
    // The generator's prefill logits are the last prompt position's.
    const LogitError error = CompareLogits(result->prompt_logits, expected.logits.back());
    EXPECT_TRUE(WithinTolerance(error, GetParam())) << "case " << c;
  }
}

// Decoding one token at a time through the latent KV cache (absorbed MLA, the serving path)
// reproduces the reference logits of every position, and the naive MLA decode agrees with it.
TEST_P(HfConformance, IncrementalDecodeMatchesReferenceAndNaiveDecode) {
  ModelOptions naive_options;
  naive_options.decode_attention = AttentionAlgorithm::kNaive;
  auto naive = LoadModelFromDirectory(SourceDir() / GetParam().directory, naive_options);
  ASSERT_TRUE(naive.ok()) << naive.status();
  const ReferenceCase& expected = reference_.cases.back();  // the longest prompt
  const DeepseekModel* models[] = {loaded_.model.get(), naive->model.get()};
  LatentKvCache caches[] = {models[0]->NewCache(), models[1]->NewCache()};
  double worst_naive_vs_absorbed = 0.0, worst_vs_reference = 0.0;
  for (size_t position = 0; position < expected.prompt_ids.size(); ++position) {
    std::vector<float> rows[2];
    for (int m = 0; m < 2; ++m) {
      SequenceInput input{&caches[m], std::span(expected.prompt_ids.data() + position, 1), false};
      auto logits = models[m]->Step(std::span(&input, 1));
      ASSERT_TRUE(logits.ok()) << logits.status();
      rows[m].assign((*logits)[0].values().begin(), (*logits)[0].values().end());
    }
    const LogitError agreement = CompareLogits(rows[1], rows[0]);
    worst_naive_vs_absorbed = std::max(worst_naive_vs_absorbed, agreement.relative);
    EXPECT_LE(agreement.relative, 1e-5) << "naive vs absorbed decode at position " << position;
    const LogitError error = CompareLogits(rows[0], expected.logits[position]);
    worst_vs_reference = std::max(worst_vs_reference, error.max_abs);
    EXPECT_TRUE(WithinTolerance(error, GetParam())) << "decode position " << position;
  }
  std::printf("[conformance] %s: token-by-token decode vs reference max|diff| %.3g, naive vs absorbed %.3g relative\n",
              GetParam().name.c_str(), worst_vs_reference, worst_naive_vs_absorbed);
}

// One prefill of the whole prompt equals a short prefill followed by cached decode steps.
TEST_P(HfConformance, CachedDecodeEqualsFullReforward) {
  const DeepseekModel& model = *loaded_.model;
  const ReferenceCase& expected = reference_.cases.back();
  const std::vector<int32_t>& ids = expected.prompt_ids;
  ASSERT_GE(ids.size(), 4u);
  LatentKvCache full_cache = model.NewCache();
  SequenceInput full{&full_cache, ids, true};
  auto full_logits = model.Step(std::span(&full, 1));
  ASSERT_TRUE(full_logits.ok()) << full_logits.status();
  const size_t prefill = 3;
  LatentKvCache cache = model.NewCache();
  SequenceInput first{&cache, std::span(ids.data(), prefill), false};
  auto logits = model.Step(std::span(&first, 1));
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (size_t position = prefill - 1; position < ids.size(); ++position) {
    if (position >= prefill) {
      SequenceInput decode{&cache, std::span(ids.data() + position, 1), false};
      logits = model.Step(std::span(&decode, 1));
      ASSERT_TRUE(logits.ok()) << logits.status();
    }
    const LogitError error = CompareLogits((*logits)[0].values(), (*full_logits)[0].row(position));
    EXPECT_LE(error.relative, 1e-5) << "position " << position;
  }
  EXPECT_EQ(cache.length(), static_cast<int64_t>(ids.size()));
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, HfConformance,
    ::testing::Values(FixtureSpec{"v3_tiny", "tests/fixtures/v3_tiny", true},
                      FixtureSpec{"v2_lite_tiny", "tests/fixtures/v2_lite_tiny", true},
                      FixtureSpec{"v2_grouped_tiny", "tests/fixtures/v2_grouped_tiny", true},
                      FixtureSpec{"v3_tiny_fp8", "tests/fixtures/v3_tiny_fp8", false},
                      FixtureSpec{"prose_bf16", "models/prose", false}),
    [](const ::testing::TestParamInfo<FixtureSpec>& info) { return info.param.name; });

}  // namespace
}  // namespace expertmesh::conformance
