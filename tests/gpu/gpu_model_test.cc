// GpuModel vs the CPU engine (DeepseekModel) on in-memory random tiny V3 and V2-Lite models:
// prefill logits at every position, decode steps, routing, batched steps, greedy decoding (step
// by step, device loop, CUDA graph) and the error contract. Tolerances (max |diff| / max |ref|):
// float32 weights with float32 cuBLAS (no TF32) differ from OpenBLAS only in summation order and
// fast-math rsqrt/exp, so 2e-4; bf16 weights and GEMM inputs (8 mantissa bits, ~4e-3 per rounding
// through several layers) get 6e-2.
#include "engine/model/cuda/gpu_model.h"

#include <cstdio>

#include "engine/model/sampler.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/model/model_test_util.h"

namespace expertmesh {
namespace {

using cuda::ElementType;

constexpr double kF32Tolerance = 2e-4;
constexpr double kBf16Tolerance = 6e-2;

// The same random experts in a CPU LocalRoutedExperts and a CudaRoutedExperts.
struct Experts {
  std::unique_ptr<LocalRoutedExperts> cpu;
  std::unique_ptr<CudaRoutedExperts> gpu;
};

Experts RandomExpertPair(const ModelConfig& config, GpuExpertFormat format, uint64_t seed) {
  Experts out;
  std::mt19937_64 rng(seed);
  out.cpu = std::make_unique<LocalRoutedExperts>(config.hidden_size, config.moe_intermediate_size);
  auto gpu = CudaRoutedExperts::Create({config.hidden_size, config.moe_intermediate_size, config.n_routed_experts, format});
  EXPECT_TRUE(gpu.ok()) << gpu.status();
  out.gpu = std::move(gpu).value();
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (!config.IsMoeLayer(layer)) continue;
    for (int32_t e = 0; e < config.n_routed_experts; ++e) {
      MlpWeights mlp;
      const std::vector<WeightSpec> specs = RoutedExpertWeightSpecs(config, layer, e);
      testing::FillLike(mlp.gate_proj, specs[0].shape, rng);
      testing::FillLike(mlp.up_proj, specs[1].shape, rng);
      testing::FillLike(mlp.down_proj, specs[2].shape, rng);
      EXPECT_TRUE(out.gpu->SetExpert(layer, e, mlp).ok());
      EXPECT_TRUE(out.cpu->AddExpert(layer, e, std::move(mlp)).ok());
    }
  }
  return out;
}

const std::vector<int32_t> kPrompt = {3, 17, 42, 5, 9, 60, 1, 33, 28, 11};

struct Pair {
  ModelConfig config;
  Experts experts;
  std::unique_ptr<DeepseekModel> cpu;
  std::unique_ptr<GpuModel> gpu;
};

Pair Build(const ModelConfig& config, ElementType weight_type, GpuExpertFormat expert_format, bool gpu_experts,
           AttentionAlgorithm prefill = AttentionAlgorithm::kNaive) {
  Pair p;
  p.config = config;
  p.experts = RandomExpertPair(config, expert_format, 11);
  ModelWeights weights = testing::RandomModelWeights(config, 7);
  GpuModelOptions options;
  options.weight_type = weight_type;
  options.max_step_tokens = 64;
  options.max_sequences = 4;
  options.max_sequence_length = 64;
  options.page_tokens = 4;  // several pages per sequence even for short prompts
  options.prefill_attention = prefill;
  auto gpu = GpuModel::Create(config, weights, gpu_experts ? static_cast<RoutedExperts*>(p.experts.gpu.get())
                                                           : p.experts.cpu.get(), options);
  EXPECT_TRUE(gpu.ok()) << gpu.status();
  p.gpu = std::move(gpu).value();
  auto cpu = DeepseekModel::Create(config, std::move(weights), p.experts.cpu.get());
  EXPECT_TRUE(cpu.ok()) << cpu.status();
  p.cpu = std::move(cpu).value();
  return p;
}

class GpuModelTest : public ::testing::TestWithParam<bool> {  // param: V3 (true) or V2-Lite
 protected:
  void SetUp() override { EXPERTMESH_SKIP_WITHOUT_GPU(); }
  ModelConfig Config() const { return GetParam() ? testing::TinyV3Config() : testing::TinyV2LiteConfig(); }
};

// Prefill all logits, then three decode steps; returns the worst relative error.
double CompareWithCpu(Pair& p, const RoutingObserver* cpu_observer = nullptr,
                      const RoutingObserver* gpu_observer = nullptr) {
  LatentKvCache cache = p.cpu->NewCache();
  auto sequence = p.gpu->NewSequence();
  EXPECT_TRUE(sequence.ok());
  const size_t prefill = 7;
  SequenceInput cpu_in{&cache, std::span(kPrompt.data(), prefill), true};
  GpuSequenceInput gpu_in{*sequence, std::span(kPrompt.data(), prefill), true};
  StepOptions step_options;
  step_options.observer = cpu_observer;
  auto expected = p.cpu->Step(std::span(&cpu_in, 1), step_options);
  auto actual = p.gpu->Step(std::span(&gpu_in, 1), gpu_observer);
  EXPECT_TRUE(expected.ok() && actual.ok()) << expected.status() << actual.status();
  double worst = testing::RelativeMaxError((*actual)[0].values(), (*expected)[0].values());
  for (size_t i = prefill; i < kPrompt.size(); ++i) {
    SequenceInput cpu_step{&cache, std::span(kPrompt.data() + i, 1), false};
    GpuSequenceInput gpu_step{*sequence, std::span(kPrompt.data() + i, 1), false};
    expected = p.cpu->Step(std::span(&cpu_step, 1), step_options);
    actual = p.gpu->Step(std::span(&gpu_step, 1), gpu_observer);
    EXPECT_TRUE(expected.ok() && actual.ok());
    worst = std::max(worst, testing::RelativeMaxError((*actual)[0].values(), (*expected)[0].values()));
  }
  EXPECT_EQ(p.gpu->SequenceLength(*sequence), static_cast<int64_t>(kPrompt.size()));
  p.gpu->ReleaseSequence(*sequence);
  return worst;
}

TEST_P(GpuModelTest, Float32MatchesCpuWithHostAndDeviceExperts) {
  for (AttentionAlgorithm prefill : {AttentionAlgorithm::kNaive, AttentionAlgorithm::kAbsorbed}) {
    for (bool gpu_experts : {false, true}) {
      Pair p = Build(Config(), ElementType::kF32, GpuExpertFormat::kF32, gpu_experts, prefill);
      std::vector<std::vector<int32_t>> cpu_routes, gpu_routes;
      RoutingObserver cpu_observer = [&](int64_t, std::span<const int32_t> ids, int64_t, int64_t) {
        cpu_routes.emplace_back(ids.begin(), ids.end());
      };
      RoutingObserver gpu_observer = [&](int64_t, std::span<const int32_t> ids, int64_t, int64_t) {
        gpu_routes.emplace_back(ids.begin(), ids.end());
      };
      const double error = CompareWithCpu(p, &cpu_observer, &gpu_observer);
      std::printf("[gpu-model] %s f32, %s prefill attention, %s experts: max relative logit error %.3g\n",
                  GetParam() ? "V3" : "V2-Lite", prefill == AttentionAlgorithm::kNaive ? "naive" : "absorbed",
                  gpu_experts ? "GPU" : "CPU", error);
      EXPECT_LT(error, kF32Tolerance);
      EXPECT_EQ(gpu_routes, cpu_routes) << "routing differs";
    }
  }
}

TEST_P(GpuModelTest, Bf16WithTensorCoreExpertsIsClose) {
  Pair p = Build(Config(), ElementType::kBF16, GpuExpertFormat::kBF16, true);
  for (int64_t skinny_rows : {int64_t(0), int64_t(16)}) {  // cuBLAS linears, then the skinny kernels
    p.gpu->set_decode_linear_max_rows(skinny_rows);
    const double error = CompareWithCpu(p);
    std::printf("[gpu-model] %s bf16, %s linears: max relative logit error %.3g\n", GetParam() ? "V3" : "V2-Lite",
                skinny_rows > 0 ? "skinny" : "cuBLAS", error);
    EXPECT_LT(error, kBf16Tolerance);
  }
}

// StepOptions::routed_experts (the attention tier's fan-out pinned to a step's weight set) replaces
// the model's experts for that step: the logits equal the CPU engine's with those experts, and
// differ from the ones with the model's own.
TEST_P(GpuModelTest, StepOptionsExpertsReplaceTheModelsExperts) {
  Pair p = Build(Config(), ElementType::kF32, GpuExpertFormat::kF32, true);
  Experts other = RandomExpertPair(p.config, GpuExpertFormat::kF32, 99);
  auto cpu_other = DeepseekModel::Create(p.config, testing::RandomModelWeights(p.config, 7), other.cpu.get());
  ASSERT_TRUE(cpu_other.ok()) << cpu_other.status();
  for (RoutedExperts* step_experts : {static_cast<RoutedExperts*>(other.cpu.get()),
                                      static_cast<RoutedExperts*>(other.gpu.get())}) {
    LatentKvCache cache = (*cpu_other)->NewCache(), own_cache = p.cpu->NewCache();
    auto sequence = p.gpu->NewSequence();
    ASSERT_TRUE(sequence.ok());
    StepOptions with_other;
    with_other.routed_experts = step_experts;
    for (size_t begin = 0, end = 7; begin < kPrompt.size(); begin = end, end = begin + 1) {
      const auto tokens = std::span(kPrompt.data() + begin, end - begin);
      SequenceInput cpu_in{&cache, tokens, false}, own_in{&own_cache, tokens, false};
      GpuSequenceInput gpu_in{*sequence, tokens, false};
      auto expected = (*cpu_other)->Step(std::span(&cpu_in, 1));
      auto own = p.cpu->Step(std::span(&own_in, 1));
      auto actual = p.gpu->Step(std::span(&gpu_in, 1), with_other);
      ASSERT_TRUE(expected.ok() && own.ok() && actual.ok()) << expected.status() << own.status() << actual.status();
      EXPECT_LT(testing::RelativeMaxError((*actual)[0].values(), (*expected)[0].values()), kF32Tolerance);
      EXPECT_GT(testing::RelativeMaxError((*actual)[0].values(), (*own)[0].values()), 1e-2);
    }
    p.gpu->ReleaseSequence(*sequence);
  }
}

TEST_P(GpuModelTest, BatchedStepEqualsSingleSequences) {
  Pair p = Build(Config(), ElementType::kF32, GpuExpertFormat::kF32, true);
  auto a = p.gpu->NewSequence(), b = p.gpu->NewSequence();
  ASSERT_TRUE(a.ok() && b.ok());
  GpuSequenceInput both[] = {{*a, std::span(kPrompt.data(), 5), true}, {*b, std::span(kPrompt.data() + 2, 8), false}};
  auto batched = p.gpu->Step(both);
  ASSERT_TRUE(batched.ok()) << batched.status();
  p.gpu->ReleaseSequence(*a);
  p.gpu->ReleaseSequence(*b);
  for (int i = 0; i < 2; ++i) {
    auto s = p.gpu->NewSequence();
    GpuSequenceInput alone{*s, both[i].token_ids, both[i].all_logits};
    auto single = p.gpu->Step(std::span(&alone, 1));
    ASSERT_TRUE(single.ok());
    EXPECT_LT(testing::RelativeMaxError((*batched)[i].values(), (*single)[0].values()), 1e-5) << i;
    p.gpu->ReleaseSequence(*s);
  }
}

TEST_P(GpuModelTest, GreedyDecodingAgreesEverywhere) {
  // float32: GPU greedy tokens (step by step) equal the CPU engine's.
  {
    Pair p = Build(Config(), ElementType::kF32, GpuExpertFormat::kF32, true);
    LatentKvCache cache = p.cpu->NewCache();
    auto s = p.gpu->NewSequence();
    std::vector<int32_t> cpu_tokens, gpu_tokens;
    int32_t cpu_next = kPrompt[0], gpu_next = kPrompt[0];
    for (int i = 0; i < 12; ++i) {
      SequenceInput cpu_in{&cache, std::span(&cpu_next, 1), false};
      GpuSequenceInput gpu_in{*s, std::span(&gpu_next, 1), false};
      auto c = p.cpu->Step(std::span(&cpu_in, 1));
      auto g = p.gpu->Step(std::span(&gpu_in, 1));
      ASSERT_TRUE(c.ok() && g.ok());
      cpu_next = ArgMax((*c)[0].values());
      gpu_next = ArgMax((*g)[0].values());
      cpu_tokens.push_back(cpu_next);
      gpu_tokens.push_back(gpu_next);
    }
    EXPECT_EQ(gpu_tokens, cpu_tokens);
  }
  // bf16 on the GPU: step-by-step, device loop and CUDA graph give identical tokens.
  Pair p = Build(Config(), ElementType::kBF16, GpuExpertFormat::kBF16, true);
  std::vector<int32_t> stepwise;
  std::vector<int32_t> firsts;
  std::vector<int64_t> sequences;
  for (int mode = 0; mode < 3; ++mode) {
    auto s = p.gpu->NewSequence();
    ASSERT_TRUE(s.ok());
    GpuSequenceInput prefill{*s, std::span(kPrompt.data(), 6), false};
    auto logits = p.gpu->Step(std::span(&prefill, 1));
    ASSERT_TRUE(logits.ok());
    const int32_t first = ArgMax((*logits)[0].values());
    std::vector<int32_t> tokens;
    if (mode == 0) {
      int32_t next = first;
      for (int i = 0; i < 10; ++i) {
        GpuSequenceInput in{*s, std::span(&next, 1), false};
        auto l = p.gpu->Step(std::span(&in, 1));
        ASSERT_TRUE(l.ok());
        next = ArgMax((*l)[0].values());
        tokens.push_back(next);
      }
      stepwise = tokens;
    } else {
      const int64_t id = *s;
      auto generated = p.gpu->GenerateGreedy(std::span(&id, 1), std::span(&first, 1), 10, /*use_cuda_graph=*/mode == 2);
      ASSERT_TRUE(generated.ok()) << generated.status();
      tokens = (*generated)[0];
      EXPECT_EQ(tokens, stepwise) << (mode == 2 ? "CUDA graph" : "device loop");
    }
    EXPECT_EQ(p.gpu->SequenceLength(*s), 16);
    p.gpu->ReleaseSequence(*s);
  }
}

TEST_P(GpuModelTest, BadInputsAreRejectedAndRolledBack) {
  Pair p = Build(Config(), ElementType::kF32, GpuExpertFormat::kF32, true);
  auto s = p.gpu->NewSequence();
  ASSERT_TRUE(s.ok());
  const std::vector<int32_t> bad = {1, 2, 9999};
  GpuSequenceInput in{*s, bad, false};
  EXPECT_EQ(p.gpu->Step(std::span(&in, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  GpuSequenceInput unknown{42, kPrompt, false};
  EXPECT_EQ(p.gpu->Step(std::span(&unknown, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  GpuSequenceInput twice[] = {{*s, kPrompt, false}, {*s, kPrompt, false}};
  EXPECT_EQ(p.gpu->Step(twice).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> too_long(65, 3);
  GpuSequenceInput long_in{*s, too_long, false};
  EXPECT_EQ(p.gpu->Step(std::span(&long_in, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p.gpu->SequenceLength(*s), 0);
  GpuSequenceInput good{*s, kPrompt, false};
  EXPECT_TRUE(p.gpu->Step(std::span(&good, 1)).ok());
  EXPECT_EQ(p.gpu->SequenceLength(*s), static_cast<int64_t>(kPrompt.size()));
  const int32_t next = 4;
  const int64_t id = *s;
  // float32 experts take the cuBLAS path, which cannot be captured.
  EXPECT_EQ(p.gpu->GenerateGreedy(std::span(&id, 1), std::span(&next, 1), 3, true).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(p.gpu->SequenceLength(*s), static_cast<int64_t>(kPrompt.size()));
}

INSTANTIATE_TEST_SUITE_P(Models, GpuModelTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "V3" : "V2Lite"; });

}  // namespace
}  // namespace expertmesh
