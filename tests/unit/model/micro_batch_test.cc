// The async RoutedExperts seam and micro-batch ping-pong of DeepseekModel: two micro-batches give
// the same logits and caches as one, with experts computed on another thread; failures of an
// in-flight micro-batch roll the whole step back cleanly. Not bitwise: OpenBLAS picks different
// sgemm kernels for different row counts (small-matrix path), so float32 sums differ in order.
#include <atomic>
#include <future>
#include <vector>

#include "gtest/gtest.h"
#include "engine/model/deepseek_model.h"
#include "tests/unit/model/model_test_util.h"
#include "tests/unit/model/threaded_experts.h"

namespace expertmesh {
namespace {

using testing::ThreadedExperts;

struct ThreadedModel {
  ModelConfig config = testing::TinyV3Config();
  std::unique_ptr<LocalRoutedExperts> local = testing::RandomExperts(config, 11);
  ThreadedExperts threaded{local.get()};
  std::unique_ptr<DeepseekModel> model =
      DeepseekModel::Create(config, testing::RandomModelWeights(config, 10), &threaded).value();
};

const std::vector<std::vector<int32_t>> kPrompts = {{1, 2, 3, 4, 5}, {9}, {40, 41, 42}, {7, 7}};

// Prefill of every prompt in one step, then three batched decode steps; all logits concatenated.
std::vector<float> RunSteps(const DeepseekModel& model, int64_t micro_batches, std::vector<LatentKvCache>& caches) {
  StepOptions options;
  options.micro_batches = micro_batches;
  std::vector<float> all;
  std::vector<SequenceInput> inputs;
  for (size_t i = 0; i < kPrompts.size(); ++i) inputs.push_back({&caches[i], kPrompts[i], true});
  for (int step = 0; step < 4; ++step) {
    auto logits = model.Step(inputs, options);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return all;
    for (const Tensor& t : *logits) all.insert(all.end(), t.values().begin(), t.values().end());
    static const std::vector<int32_t> kNext = {12, 13, 14, 15};
    for (size_t i = 0; i < inputs.size(); ++i) {
      inputs[i].token_ids = std::span(&kNext[i], 1);
      inputs[i].all_logits = false;
    }
  }
  return all;
}

TEST(MicroBatchTest, TwoMicroBatchesGiveTheSameLogitsAsOne) {
  ThreadedModel s;
  std::vector<LatentKvCache> one, two;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    one.push_back(s.model->NewCache());
    two.push_back(s.model->NewCache());
  }
  const std::vector<float> single = RunSteps(*s.model, 1, one);
  const int calls_single = s.threaded.async_calls.exchange(0);
  const std::vector<float> split = RunSteps(*s.model, 2, two);
  ASSERT_FALSE(single.empty());
  ASSERT_EQ(single.size(), split.size());
  EXPECT_LE(testing::RelativeMaxError(split, single), 1e-5);
  // 2 MoE layers, 4 steps: one call per layer and step, or two with micro-batches.
  EXPECT_EQ(calls_single, 2 * 4);
  EXPECT_EQ(s.threaded.async_calls.load(), 2 * 2 * 4);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    ASSERT_EQ(one[i].length(), two[i].length());
    for (int64_t layer = 0; layer < one[i].num_layers(); ++layer) {
      EXPECT_LE(testing::RelativeMaxError(two[i].Latents(layer), one[i].Latents(layer)), 1e-5);
    }
  }
}

TEST(MicroBatchTest, OneSequenceRunsAsASingleMicroBatch) {
  ThreadedModel s;
  LatentKvCache cache = s.model->NewCache();
  SequenceInput input{&cache, kPrompts[0], false};
  StepOptions options;
  options.micro_batches = 2;
  ASSERT_TRUE(s.model->Step(std::span(&input, 1), options).ok());
  EXPECT_EQ(s.threaded.async_calls.load(), 2);
}

TEST(MicroBatchTest, FailureInFlightRollsBackEverySequence) {
  ThreadedModel s;
  s.threaded.fail_layer = 2;
  std::vector<LatentKvCache> caches;
  for (size_t i = 0; i < kPrompts.size(); ++i) caches.push_back(s.model->NewCache());
  std::vector<SequenceInput> inputs;
  for (size_t i = 0; i < kPrompts.size(); ++i) inputs.push_back({&caches[i], kPrompts[i], false});
  StepOptions options;
  options.micro_batches = 2;
  auto logits = s.model->Step(inputs, options);
  ASSERT_FALSE(logits.ok());
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(logits.status().message().find("routed experts of layer 2: shard down"), std::string::npos)
      << logits.status();
  for (const LatentKvCache& cache : caches) {
    EXPECT_EQ(cache.length(), 0);
    for (int64_t layer = 0; layer < cache.num_layers(); ++layer) EXPECT_EQ(cache.LayerLength(layer), 0);
  }
  // The model is still usable after the failure.
  s.threaded.fail_layer = -1;
  EXPECT_TRUE(s.model->Step(inputs, options).ok());
}

TEST(MicroBatchTest, ExpertDeadlineReachesTheRoutedExperts) {
  struct DeadlineRecorder : RoutedExperts {
    RoutedExperts* inner = nullptr;
    std::chrono::steady_clock::time_point seen{};
    absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override {
      seen = batch.deadline;
      return inner->Compute(batch, output);
    }
  };
  ModelConfig config = testing::TinyV3Config();
  auto local = testing::RandomExperts(config, 11);
  DeadlineRecorder recorder;
  recorder.inner = local.get();
  auto model = DeepseekModel::Create(config, testing::RandomModelWeights(config, 10), &recorder).value();
  LatentKvCache cache = model->NewCache();
  SequenceInput input{&cache, kPrompts[0], false};
  StepOptions options;
  options.expert_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  ASSERT_TRUE(model->Step(std::span(&input, 1), options).ok());
  EXPECT_EQ(recorder.seen, options.expert_deadline);
}

}  // namespace
}  // namespace expertmesh
