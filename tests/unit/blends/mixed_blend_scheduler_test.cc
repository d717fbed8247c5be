// BatchScheduler with sequences pinned to different weight sets in one running batch: each
// iteration steps every weight-set group with its own experts (continuous batching kept), so
// every sequence gets exactly what it gets alone with its own experts; a failing weight set ends
// only its own sequences.
#include "attention-svc/batch_scheduler.h"

#include <atomic>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/model/model_test_util.h"

namespace expertmesh::attention_service {
namespace {

// Counts the calls it forwards; fails them all when `fail` is set; with `hold` set, every call
// first waits for it (the test keeps the scheduler inside a step that way).
class CountingExperts : public RoutedExperts {
 public:
  explicit CountingExperts(std::unique_ptr<LocalRoutedExperts> inner) : inner_(std::move(inner)) {}
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override {
    if (hold.valid()) hold.wait();
    ++calls;
    max_tokens = std::max<int64_t>(max_tokens, batch.num_tokens);
    if (fail) return absl::FailedPreconditionError("weight set dropped");
    return inner_->Compute(batch, output);
  }
  std::atomic<int> calls{0};
  std::atomic<int64_t> max_tokens{0};
  std::atomic<bool> fail{false};
  std::shared_future<void> hold;

 private:
  std::unique_ptr<LocalRoutedExperts> inner_;
};

struct Result {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  absl::Status status;
};

Result Drain(SequenceHandle& handle) {
  Result result;
  SequenceUpdate update;
  while (handle.WaitNext(&update, Clock::now() + std::chrono::seconds(20))) {
    if (update.finished) {
      result.status = update.status;
      return result;
    }
    result.tokens.push_back(update.token_id);
    result.logits.push_back(update.logits);
  }
  result.status = absl::DeadlineExceededError("test timed out");
  return result;
}

struct Fixture {
  ModelConfig config = testing::TinyV3Config();
  std::shared_ptr<CountingExperts> blend_a = std::make_shared<CountingExperts>(testing::RandomExperts(config, 11));
  std::shared_ptr<CountingExperts> blend_b = std::make_shared<CountingExperts>(testing::RandomExperts(config, 12));
  // The model's own experts are never used: every sequence is pinned.
  std::unique_ptr<LocalRoutedExperts> unused = testing::RandomExperts(config, 13);
  std::unique_ptr<DeepseekModel> model =
      DeepseekModel::Create(config, testing::RandomModelWeights(config, 4), unused.get()).value();

  SequenceParams Params(std::vector<int32_t> prompt, std::shared_ptr<CountingExperts> experts) const {
    SequenceParams params;
    params.prompt_ids = std::move(prompt);
    params.max_tokens = 6;
    params.include_logits = true;
    params.blend = experts == blend_a ? "a" : experts == blend_b ? "b" : "held";
    params.blend_version = 1;
    params.experts = std::move(experts);
    return params;
  }
};

TEST(MixedBlendSchedulerTest, EachSequenceGetsItsOwnWeightSetInASharedBatch) {
  Fixture f;
  const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7}, {5, 6, 7}, {40, 41}, {9}};
  const std::vector<std::shared_ptr<CountingExperts>> pins = {f.blend_a, f.blend_b, f.blend_a, f.blend_b};

  std::vector<Result> solo;
  {
    BatchScheduler scheduler(*f.model, {});
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto handle = scheduler.Submit(f.Params(prompts[i], pins[i]));
      ASSERT_TRUE(handle.ok());
      solo.push_back(Drain(**handle));
      ASSERT_TRUE(solo.back().status.ok()) << solo.back().status;
    }
  }
  ASSERT_NE(solo[0].logits[0], solo[1].logits[0]) << "the two weight sets must differ for this test to mean anything";
  EXPECT_EQ(f.model->config().n_routed_experts, 8);

  f.blend_a->max_tokens = 0;
  BatchScheduler scheduler(*f.model, {});
  // A sequence of a third weight set holds the scheduler inside its first step until the four
  // sequences are queued, so they all join the next iteration together (however slow this
  // machine's threads are scheduled).
  std::promise<void> release;
  auto held = std::make_shared<CountingExperts>(testing::RandomExperts(f.config, 14));
  held->hold = release.get_future().share();
  auto held_handle = scheduler.Submit(f.Params({3, 4}, held));
  ASSERT_TRUE(held_handle.ok());
  for (int spin = 0; spin < 2000 && scheduler.running_sequences() == 0; ++spin) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(scheduler.running_sequences(), 1) << "the held sequence never started";
  std::vector<std::shared_ptr<SequenceHandle>> handles;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto handle = scheduler.Submit(f.Params(prompts[i], pins[i]));
    ASSERT_TRUE(handle.ok());
    handles.push_back(*handle);
  }
  ASSERT_EQ(scheduler.waiting_sequences(), static_cast<int64_t>(prompts.size()));
  release.set_value();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Result together = Drain(*handles[i]);
    ASSERT_TRUE(together.status.ok()) << together.status;
    EXPECT_EQ(together.tokens, solo[i].tokens) << "sequence " << i;
    ASSERT_EQ(together.logits.size(), solo[i].logits.size());
    for (size_t t = 0; t < together.logits.size(); ++t) {
      EXPECT_LE(testing::RelativeMaxError(together.logits[t], solo[i].logits[t]), 1e-5) << "sequence " << i << " token " << t;
    }
  }
  EXPECT_TRUE(Drain(*held_handle.value()).status.ok());
  // Blend a's prompts (3 + 2 tokens) were prefilled in one Step: its experts saw both at once.
  EXPECT_EQ(f.blend_a->max_tokens.load(), 5) << "sequences of one weight set still batch together";
}

TEST(MixedBlendSchedulerTest, AFailingWeightSetEndsOnlyItsSequences) {
  Fixture f;
  BatchScheduler scheduler(*f.model, {});
  f.blend_b->fail = true;
  auto a = scheduler.Submit(f.Params({5, 6, 7}, f.blend_a));
  auto b = scheduler.Submit(f.Params({5, 6, 7}, f.blend_b));
  ASSERT_TRUE(a.ok() && b.ok());
  const Result a_result = Drain(**a);
  const Result b_result = Drain(**b);
  EXPECT_TRUE(a_result.status.ok()) << a_result.status;
  EXPECT_EQ(a_result.tokens.size(), 6u);
  EXPECT_EQ(b_result.status.code(), absl::StatusCode::kFailedPrecondition) << b_result.status;
}

}  // namespace
}  // namespace expertmesh::attention_service
