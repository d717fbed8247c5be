// The GPU model against Hugging Face transformers on the fixtures (tiny V3, sharded V2-Lite,
// group-limited V2, FP8 V3) and the bundled bf16 prose model. Fidelity mode (float32 weights, float32
// experts loaded straight from the checkpoint): the conformance suite's tolerances (max |diff| <=
// 1e-4 per position; for bf16/FP8 checkpoints also relative <= 2e-2), identical router top-k and
// identical 16 greedy tokens. Serving mode (bf16 weights, bf16 or FP8 experts on the tensor-core
// path): median relative logit error <= 5e-2 (bf16 GEMM inputs); maximum, router agreement and
// greedy agreement reported, not required (bf16 rounding flips near-tie expert choices and tokens).
#include <cstdio>

#include "engine/format/checkpoint.h"
#include "engine/model/cuda/cuda_expert_loader.h"
#include "engine/model/cuda/gpu_model.h"
#include "engine/model/sampler.h"
#include "engine/model/weight_loader.h"
#include "tests/conformance/reference_fixture.h"
#include "tests/gpu/gpu_test_util.h"

namespace expertmesh {
namespace {

using conformance::CompareLogits;
using conformance::LogitError;
using conformance::Reference;

struct FixtureSpec {
  std::string name;
  std::string directory;
  bool float32_weights;
};

void PrintTo(const FixtureSpec& spec, std::ostream* out) { *out << spec.name; }

struct Served {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<CudaRoutedExperts> experts;
  std::unique_ptr<GpuModel> model;
};

Served Serve(const std::filesystem::path& directory, cuda::ElementType weight_type, GpuExpertFormat expert_format) {
  Served s;
  auto checkpoint = Checkpoint::Open(directory);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  s.checkpoint = std::move(checkpoint).value();
  LoadOptions load;
  load.load_routed_experts = false;
  auto weights = LoadWeights(*s.checkpoint, load);
  EXPECT_TRUE(weights.ok()) << weights.status();
  CudaExpertLoadOptions expert_options;
  expert_options.format = expert_format;
  int64_t reports = 0;
  expert_options.progress = [&](const CudaExpertLoadProgress& p) {
    ++reports;
    if (p.experts_loaded == p.experts_total) std::printf("[gpu-fixture] %s\n", p.ToString().c_str());
  };
  auto experts = LoadCudaRoutedExperts(*s.checkpoint, expert_options);
  EXPECT_TRUE(experts.ok()) << experts.status();
  s.experts = std::move(experts).value();
  EXPECT_GT(reports, 1);
  GpuModelOptions options;
  options.weight_type = weight_type;
  options.max_step_tokens = 128;
  options.max_sequences = 4;
  options.max_sequence_length = 128;
  options.page_tokens = 16;
  auto model = GpuModel::Create(s.checkpoint->config(), weights->weights, s.experts.get(), options);
  EXPECT_TRUE(model.ok()) << model.status();
  s.model = std::move(model).value();
  return s;
}

class GpuFixtureTest : public ::testing::TestWithParam<FixtureSpec> {
 protected:
  void SetUp() override {
    EXPERTMESH_SKIP_WITHOUT_GPU();
    directory_ = conformance::SourceDir() / GetParam().directory;
    reference_ = conformance::LoadReference(directory_ / "reference.json");
  }
  // Prefill logits (all positions) and routing of case `c`, then greedy tokens.
  struct Run {
    std::vector<Tensor> logits;
    std::map<int64_t, std::vector<std::vector<int32_t>>> routes;
    std::vector<int32_t> greedy;
  };
  Run RunCase(GpuModel& model, size_t c, bool greedy_on_device) {
    const conformance::ReferenceCase& expected = reference_.cases[c];
    Run run;
    RoutingObserver observer = [&](int64_t layer, std::span<const int32_t> ids, int64_t tokens, int64_t top_k) {
      for (int64_t t = 0; t < tokens; ++t) {
        std::vector<int32_t> chosen(ids.begin() + t * top_k, ids.begin() + (t + 1) * top_k);
        std::sort(chosen.begin(), chosen.end());
        run.routes[layer].push_back(std::move(chosen));
      }
    };
    auto s = model.NewSequence();
    EXPECT_TRUE(s.ok());
    GpuSequenceInput input{*s, expected.prompt_ids, true};
    auto logits = model.Step(std::span(&input, 1), &observer);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return run;
    run.logits = std::move(logits).value();
    const int32_t first = ArgMax(run.logits[0].row(run.logits[0].dim(0) - 1));
    run.greedy.push_back(first);
    const auto more = static_cast<int64_t>(expected.greedy_ids.size()) - 1;
    if (greedy_on_device) {
      const int64_t id = *s;
      auto generated = model.GenerateGreedy(std::span(&id, 1), std::span(&first, 1), more, false);
      EXPECT_TRUE(generated.ok()) << generated.status();
      if (generated.ok()) run.greedy.insert(run.greedy.end(), (*generated)[0].begin(), (*generated)[0].end());
    } else {
      int32_t next = first;
      for (int64_t i = 0; i < more; ++i) {
        GpuSequenceInput step{*s, std::span(&next, 1), false};
        auto l = model.Step(std::span(&step, 1));
        EXPECT_TRUE(l.ok());
        next = ArgMax((*l)[0].values());
        run.greedy.push_back(next);
      }
    }
    model.ReleaseSequence(*s);
    return run;
  }
  std::filesystem::path directory_;
  Reference reference_;
};

TEST_P(GpuFixtureTest, Float32FidelityMatchesTransformers) {
  Served served = Serve(directory_, cuda::ElementType::kF32, GpuExpertFormat::kF32);
  ASSERT_NE(served.model, nullptr);
  double worst_abs = 0.0, worst_rel = 0.0;
  for (size_t c = 0; c < reference_.cases.size(); ++c) {
    const conformance::ReferenceCase& expected = reference_.cases[c];
    Run run = RunCase(*served.model, c, /*greedy_on_device=*/c % 2 == 1);
    ASSERT_EQ(run.logits.size(), 1u);
    for (size_t position = 0; position < expected.logits.size(); ++position) {
      const LogitError error = CompareLogits(run.logits[0].row(position), expected.logits[position]);
      worst_abs = std::max(worst_abs, error.max_abs);
      worst_rel = std::max(worst_rel, error.relative);
      EXPECT_LE(error.max_abs, 1e-4) << "case " << c << " position " << position;
      if (!GetParam().float32_weights) {
        EXPECT_LE(error.relative, 2e-2) << "case " << c << " position " << position;
      }
    }
    for (const auto& [layer, per_position] : expected.router_topk) {
      EXPECT_EQ(run.routes[layer], per_position) << "case " << c << " layer " << layer;
    }
    EXPECT_EQ(run.greedy, expected.greedy_ids) << "case " << c;
  }
  std::printf("[gpu-fixture] %s float32: logits max|diff| %.3g, max relative %.3g over %zu cases\n",
              GetParam().name.c_str(), worst_abs, worst_rel, reference_.cases.size());
}

TEST_P(GpuFixtureTest, Bf16ServingModeIsClose) {
  const bool fp8 = GetParam().name.find("fp8") != std::string::npos;
  Served served = Serve(directory_, cuda::ElementType::kBF16, fp8 ? GpuExpertFormat::kFP8Block : GpuExpertFormat::kBF16);
  ASSERT_NE(served.model, nullptr);
  std::vector<double> errors;
  int64_t greedy_same = 0, greedy_total = 0, routes_same = 0, routes_total = 0;
  for (size_t c = 0; c < reference_.cases.size(); ++c) {
    const conformance::ReferenceCase& expected = reference_.cases[c];
    Run run = RunCase(*served.model, c, /*greedy_on_device=*/true);
    ASSERT_EQ(run.logits.size(), 1u);
    for (size_t position = 0; position < expected.logits.size(); ++position) {
      errors.push_back(CompareLogits(run.logits[0].row(position), expected.logits[position]).relative);
    }
    for (const auto& [layer, per_position] : expected.router_topk) {
      for (size_t position = 0; position < per_position.size() && position < run.routes[layer].size(); ++position) {
        routes_same += run.routes[layer][position] == per_position[position];
        ++routes_total;
      }
    }
    for (size_t i = 0; i < expected.greedy_ids.size() && i < run.greedy.size(); ++i) {
      if (run.greedy[i] != expected.greedy_ids[i]) break;
      ++greedy_same;
    }
    greedy_total += static_cast<int64_t>(expected.greedy_ids.size());
  }
  std::sort(errors.begin(), errors.end());
  const double median = errors[errors.size() / 2], p90 = errors[errors.size() * 9 / 10], worst = errors.back();
  std::printf("[gpu-fixture] %s bf16 serving%s: relative logit error median %.3g, p90 %.3g, max %.3g over %zu "
              "positions; router top-k = reference at %lld/%lld (position, layer); greedy prefix agreement %lld/%lld\n",
              GetParam().name.c_str(), fp8 ? " (FP8 experts)" : "", median, p90, worst, errors.size(),
              (long long)routes_same, (long long)routes_total, (long long)greedy_same, (long long)greedy_total);
  // bf16 GEMM inputs move logits by ~1e-2; where that flips a near-tie expert choice (these tiny
  // random fixtures have many) single positions move much more, so the bound is on the median.
  EXPECT_LE(median, 5e-2);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, GpuFixtureTest,
    ::testing::Values(FixtureSpec{"v3_tiny", "tests/fixtures/v3_tiny", true},
                      FixtureSpec{"v2_lite_tiny", "tests/fixtures/v2_lite_tiny", true},
                      FixtureSpec{"v2_grouped_tiny", "tests/fixtures/v2_grouped_tiny", true},
                      FixtureSpec{"v3_tiny_fp8", "tests/fixtures/v3_tiny_fp8", false},
                      FixtureSpec{"prose_bf16", "models/prose", false}),
    [](const ::testing::TestParamInfo<FixtureSpec>& info) { return info.param.name; });

}  // namespace
}  // namespace expertmesh
