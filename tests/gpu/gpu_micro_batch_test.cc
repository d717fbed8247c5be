// GpuModel's two micro-batches (StepOptions::micro_batches = 2) with host-side experts answered on
// another thread (the attention tier's case): prefill and decode logits equal the CPU engine's
// (float32, 2e-4 as in gpu_model_test) and the GPU's own single batch (1e-5: only cuBLAS's choice
// of kernels for other row counts differs), the step really is split (two expert calls per MoE
// layer), and a shard failing mid-step fails the whole step and rolls every sequence back.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/cuda/gpu_model.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/model/model_test_util.h"
#include "tests/unit/model/threaded_experts.h"

namespace expertmesh {
namespace {

constexpr double kF32Tolerance = 2e-4;
const std::vector<std::vector<int32_t>> kPrompts = {{1, 2, 3, 4, 5}, {9}, {40, 41, 42}, {7, 7, 30, 2}};

struct Models {
  ModelConfig config;
  std::unique_ptr<LocalRoutedExperts> local;
  std::unique_ptr<testing::ThreadedExperts> threaded;
  std::unique_ptr<DeepseekModel> cpu;
  std::unique_ptr<GpuModel> gpu;
  int64_t moe_layers = 0;
};

Models Build(const ModelConfig& config, AttentionAlgorithm prefill) {
  Models m;
  m.config = config;
  m.local = testing::RandomExperts(config, 11);
  m.threaded = std::make_unique<testing::ThreadedExperts>(m.local.get());
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) m.moe_layers += config.IsMoeLayer(layer);
  GpuModelOptions options;
  options.weight_type = cuda::ElementType::kF32;
  options.max_step_tokens = 64;
  options.max_sequences = 8;
  options.max_sequence_length = 64;
  options.page_tokens = 4;
  options.prefill_attention = prefill;
  auto gpu = GpuModel::Create(config, testing::RandomModelWeights(config, 10), m.threaded.get(), options);
  EXPECT_TRUE(gpu.ok()) << gpu.status();
  if (gpu.ok()) m.gpu = std::move(gpu).value();
  auto cpu = DeepseekModel::Create(config, testing::RandomModelWeights(config, 10), m.local.get());
  EXPECT_TRUE(cpu.ok()) << cpu.status();
  if (cpu.ok()) m.cpu = std::move(cpu).value();
  return m;
}

// Every prompt in one step (all logits), then three batched decode steps; per step, the logits
// of every sequence concatenated.
std::vector<std::vector<float>> RunGpu(GpuModel& model, int64_t micro_batches, std::vector<int64_t>& sequences) {
  StepOptions options;
  options.micro_batches = micro_batches;
  std::vector<GpuSequenceInput> inputs;
  for (size_t i = 0; i < kPrompts.size(); ++i) inputs.push_back({sequences[i], kPrompts[i], true});
  std::vector<std::vector<float>> steps;
  static const std::vector<int32_t> kNext = {12, 13, 14, 15};
  for (int step = 0; step < 4; ++step) {
    auto logits = model.Step(inputs, options);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return steps;
    std::vector<float>& all = steps.emplace_back();
    for (const Tensor& t : *logits) all.insert(all.end(), t.values().begin(), t.values().end());
    for (size_t i = 0; i < inputs.size(); ++i) inputs[i] = {sequences[i], std::span(&kNext[i], 1), false};
  }
  return steps;
}

std::vector<std::vector<float>> RunCpu(const DeepseekModel& model) {
  std::vector<LatentKvCache> caches;
  for (size_t i = 0; i < kPrompts.size(); ++i) caches.push_back(model.NewCache());
  std::vector<SequenceInput> inputs;
  for (size_t i = 0; i < kPrompts.size(); ++i) inputs.push_back({&caches[i], kPrompts[i], true});
  std::vector<std::vector<float>> steps;
  static const std::vector<int32_t> kNext = {12, 13, 14, 15};
  for (int step = 0; step < 4; ++step) {
    auto logits = model.Step(inputs);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return steps;
    std::vector<float>& all = steps.emplace_back();
    for (const Tensor& t : *logits) all.insert(all.end(), t.values().begin(), t.values().end());
    for (size_t i = 0; i < inputs.size(); ++i) inputs[i] = {&caches[i], std::span(&kNext[i], 1), false};
  }
  return steps;
}

std::vector<int64_t> NewSequences(GpuModel& model) {
  std::vector<int64_t> sequences;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    auto id = model.NewSequence();
    EXPECT_TRUE(id.ok()) << id.status();
    sequences.push_back(id.ok() ? *id : -1);
  }
  return sequences;
}

class GpuMicroBatchTest : public ::testing::TestWithParam<bool> {  // param: V3 (true) or V2-Lite
 protected:
  void SetUp() override { EXPERTMESH_SKIP_WITHOUT_GPU(); }
  ModelConfig Config() const { return GetParam() ? testing::TinyV3Config() : testing::TinyV2LiteConfig(); }
};

TEST_P(GpuMicroBatchTest, TwoMicroBatchesMatchTheCpuEngineAndOneBatch) {
  for (AttentionAlgorithm prefill : {AttentionAlgorithm::kNaive, AttentionAlgorithm::kAbsorbed}) {
    Models m = Build(Config(), prefill);
    ASSERT_TRUE(m.gpu && m.cpu);
    const std::vector<std::vector<float>> expected = RunCpu(*m.cpu);
    std::vector<int64_t> one = NewSequences(*m.gpu), two = NewSequences(*m.gpu);
    m.threaded->async_calls = 0;
    const std::vector<std::vector<float>> single = RunGpu(*m.gpu, 1, one);
    const int calls_single = m.threaded->async_calls.exchange(0);
    const std::vector<std::vector<float>> split = RunGpu(*m.gpu, 2, two);
    const int calls_split = m.threaded->async_calls.load();
    ASSERT_EQ(expected.size(), 4u);
    ASSERT_EQ(single.size(), 4u);
    ASSERT_EQ(split.size(), 4u);
    double worst_cpu = 0, worst_single = 0;
    for (size_t step = 0; step < 4; ++step) {
      ASSERT_EQ(split[step].size(), expected[step].size());
      worst_cpu = std::max(worst_cpu, testing::RelativeMaxError(split[step], expected[step]));
      worst_single = std::max(worst_single, testing::RelativeMaxError(split[step], single[step]));
    }
    std::printf("[gpu-micro-batch] %s, %s prefill: two micro-batches vs CPU %.3g, vs one GPU batch %.3g\n",
                GetParam() ? "V3" : "V2-Lite", prefill == AttentionAlgorithm::kNaive ? "naive" : "absorbed",
                worst_cpu, worst_single);
    EXPECT_LT(worst_cpu, kF32Tolerance);
    EXPECT_LT(worst_single, 1e-5);
    // One expert call per MoE layer and step, or two when split.
    EXPECT_EQ(calls_single, m.moe_layers * 4);
    EXPECT_EQ(calls_split, 2 * m.moe_layers * 4);
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      EXPECT_EQ(m.gpu->SequenceLength(two[i]), m.gpu->SequenceLength(one[i]));
      EXPECT_EQ(m.gpu->SequenceLength(two[i]), static_cast<int64_t>(kPrompts[i].size()) + 3);
    }
  }
}

TEST_P(GpuMicroBatchTest, FailureInFlightRollsBackEverySequence) {
  Models m = Build(Config(), AttentionAlgorithm::kNaive);
  ASSERT_TRUE(m.gpu && m.cpu);
  int64_t last_moe = -1;
  for (int64_t layer = 0; layer < m.config.num_hidden_layers; ++layer) {
    if (m.config.IsMoeLayer(layer)) last_moe = layer;
  }
  m.threaded->fail_layer = last_moe;
  std::vector<int64_t> sequences = NewSequences(*m.gpu);
  std::vector<GpuSequenceInput> inputs;
  for (size_t i = 0; i < kPrompts.size(); ++i) inputs.push_back({sequences[i], kPrompts[i], true});
  StepOptions options;
  options.micro_batches = 2;
  auto logits = m.gpu->Step(inputs, options);
  ASSERT_FALSE(logits.ok());
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(logits.status().message().find(absl::StrCat("routed experts of layer ", last_moe, ": shard down")),
            std::string::npos)
      << logits.status();
  for (int64_t s : sequences) EXPECT_EQ(m.gpu->SequenceLength(s), 0);
  // Usable afterwards, with the right answer.
  m.threaded->fail_layer = -1;
  auto again = m.gpu->Step(inputs, options);
  ASSERT_TRUE(again.ok()) << again.status();
  const std::vector<std::vector<float>> expected = RunCpu(*m.cpu);
  std::vector<float> all;
  for (const Tensor& t : *again) all.insert(all.end(), t.values().begin(), t.values().end());
  EXPECT_LT(testing::RelativeMaxError(all, expected[0]), kF32Tolerance);
}

TEST_P(GpuMicroBatchTest, BadMicroBatchCountIsRejected) {
  Models m = Build(Config(), AttentionAlgorithm::kNaive);
  ASSERT_TRUE(m.gpu);
  std::vector<int64_t> sequences = NewSequences(*m.gpu);
  std::vector<GpuSequenceInput> inputs;
  for (size_t i = 0; i < kPrompts.size(); ++i) inputs.push_back({sequences[i], kPrompts[i], false});
  StepOptions options;
  options.micro_batches = 3;
  EXPECT_EQ(m.gpu->Step(inputs, options).status().code(), absl::StatusCode::kInvalidArgument);
  for (int64_t s : sequences) EXPECT_EQ(m.gpu->SequenceLength(s), 0);
  GpuModelOptions bad;
  bad.micro_batches = 0;
  EXPECT_EQ(GpuModel::Create(m.config, testing::RandomModelWeights(m.config, 10), m.threaded.get(), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Models, GpuMicroBatchTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "V3" : "V2Lite"; });

}  // namespace
}  // namespace expertmesh
