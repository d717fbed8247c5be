// BatchScheduler on an in-process model (random weights, local experts): batched sequences equal
// their solo runs, sequences join and leave a running batch, cancellation and deadlines end only
// their sequence, and an expert failure that affects some sequences ends only those.
#include "attention-svc/batch_scheduler.h"

#include <atomic>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/model/model_test_util.h"

namespace expertmesh::attention_service {
namespace {

// Local experts that fail every batch containing `failing_expert` (an expert shard that is down).
class FlakyExperts : public RoutedExperts {
 public:
  explicit FlakyExperts(RoutedExperts* inner) : inner_(inner) {}
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override {
    ++calls;
    while (hold) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (int32_t expert : batch.expert_ids) {
      if (expert == failing_expert.load()) return absl::UnavailableError("expert shard down");
    }
    return inner_->Compute(batch, output);
  }
  std::atomic<int32_t> failing_expert{-2};
  std::atomic<int> calls{0};
  std::atomic<bool> hold{false};  // blocks Compute (a step in progress) until cleared

 private:
  RoutedExperts* inner_;
};

struct SchedulerModel {
  ModelConfig config = testing::TinyV3Config();
  std::unique_ptr<LocalRoutedExperts> local = testing::RandomExperts(config, 5);
  FlakyExperts experts{local.get()};
  std::unique_ptr<DeepseekModel> model =
      DeepseekModel::Create(config, testing::RandomModelWeights(config, 4), &experts).value();
};

struct Result {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  absl::Status status;
  FinishReason reason = FinishReason::kLength;
};

Result Drain(SequenceHandle& handle) {
  Result result;
  SequenceUpdate update;
  while (handle.WaitNext(&update, Clock::now() + std::chrono::seconds(20))) {
    if (update.finished) {
      result.status = update.status;
      result.reason = update.finish_reason;
      return result;
    }
    result.tokens.push_back(update.token_id);
    result.logits.push_back(update.logits);
  }
  result.status = absl::DeadlineExceededError("test timed out");
  return result;
}

SequenceParams Params(std::vector<int32_t> prompt, int64_t max_tokens, uint64_t seed = 0) {
  SequenceParams params;
  params.prompt_ids = std::move(prompt);
  params.max_tokens = max_tokens;
  params.include_logits = true;
  params.sampling.temperature = seed == 0 ? 0.0f : 0.8f;
  params.sampling.seed = seed;
  return params;
}

std::vector<SequenceParams> MixedParams() {
  return {Params({1, 2, 3}, 12), Params({9}, 20), Params({40, 41, 42, 43, 44, 45}, 5, 3), Params({7, 7}, 16, 9)};
}

TEST(BatchSchedulerTest, BatchedSequencesEqualSoloRuns) {
  SchedulerModel s;
  std::vector<Result> solo;
  {
    BatchScheduler scheduler(*s.model, {});
    for (const SequenceParams& params : MixedParams()) solo.push_back(Drain(**scheduler.Submit(params)));
  }
  for (int micro_batches : {1, 2}) {
    SchedulerOptions options;
    options.micro_batches = micro_batches;
    BatchScheduler scheduler(*s.model, options);
    std::vector<std::shared_ptr<SequenceHandle>> handles;
    for (const SequenceParams& params : MixedParams()) handles.push_back(*scheduler.Submit(params));
    for (size_t i = 0; i < handles.size(); ++i) {
      const Result together = Drain(*handles[i]);
      ASSERT_TRUE(together.status.ok()) << together.status;
      ASSERT_TRUE(solo[i].status.ok()) << solo[i].status;
      EXPECT_EQ(together.tokens, solo[i].tokens) << "sequence " << i;
      ASSERT_EQ(together.logits.size(), solo[i].logits.size());
      for (size_t t = 0; t < together.logits.size(); ++t) {
        EXPECT_LE(testing::RelativeMaxError(together.logits[t], solo[i].logits[t]), 1e-5);
      }
      EXPECT_EQ(together.tokens.size(), MixedParams()[i].max_tokens);
      EXPECT_EQ(together.reason, FinishReason::kLength);
    }
    // Fewer steps than sequences x tokens: they really stepped together.
    EXPECT_LE(scheduler.steps(), 21u);
  }
}

TEST(BatchSchedulerTest, StopTokenEndsTheSequence) {
  SchedulerModel s;
  BatchScheduler scheduler(*s.model, {});
  const Result full = Drain(**scheduler.Submit(Params({3, 4, 5}, 10)));
  ASSERT_TRUE(full.status.ok());
  SequenceParams params = Params({3, 4, 5}, 10);
  params.stop_token_ids = {full.tokens[2]};
  const Result stopped = Drain(**scheduler.Submit(params));
  EXPECT_EQ(stopped.reason, FinishReason::kStop);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + 3));
}

TEST(BatchSchedulerTest, CancelAndDeadlineEndOnlyTheirSequence) {
  SchedulerModel s;
  BatchScheduler scheduler(*s.model, {});
  auto keep = *scheduler.Submit(Params({1, 2}, 40));
  auto cancelled = *scheduler.Submit(Params({3, 4}, 40));
  SequenceParams expiring = Params({5, 6}, 40);
  expiring.deadline = Clock::now() - std::chrono::milliseconds(1);
  auto expired = *scheduler.Submit(expiring);
  cancelled->Cancel();
  const Result kept = Drain(*keep);
  EXPECT_TRUE(kept.status.ok()) << kept.status;
  EXPECT_EQ(kept.tokens.size(), 40u);
  EXPECT_EQ(Drain(*cancelled).status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Drain(*expired).status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(BatchSchedulerTest, ExpertFailureEndsOnlyTheSequencesThatNeedIt) {
  SchedulerModel s;
  // Find, with a solo run, one expert that sequence A's prefill uses in some layer but B's not.
  std::map<int, std::set<int32_t>> used;  // sequence -> experts of its prefill
  const std::vector<std::vector<int32_t>> prompts = {{11, 12, 13, 14}, {50}};
  for (int i = 0; i < 2; ++i) {
    LatentKvCache cache = s.model->NewCache();
    SequenceInput input{&cache, prompts[i], false};
    RoutingObserver observer = [&](int64_t, std::span<const int32_t> ids, int64_t, int64_t) {
      used[i].insert(ids.begin(), ids.end());
    };
    ASSERT_TRUE(s.model->Step(std::span(&input, 1), &observer).ok());
  }
  int32_t only_a = -1;
  for (int32_t expert : used[0]) {
    if (!used[1].contains(expert)) only_a = expert;
  }
  ASSERT_NE(only_a, -1) << "prompts route identically; pick others";
  s.experts.failing_expert = only_a;
  BatchScheduler scheduler(*s.model, {});
  // While a first sequence's step is held, A and B queue up: they join the next step together,
  // which fails; then each is retried alone.
  s.experts.hold = true;
  auto blocker = *scheduler.Submit(Params(prompts[1], 1));
  while (s.experts.calls == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto a = *scheduler.Submit(Params(prompts[0], 1));
  auto b = *scheduler.Submit(Params(prompts[1], 1));
  const int calls_before = s.experts.calls;
  s.experts.hold = false;
  EXPECT_TRUE(Drain(*blocker).status.ok());
  const Result result_a = Drain(*a), result_b = Drain(*b);
  EXPECT_EQ(result_a.status.code(), absl::StatusCode::kUnavailable) << result_a.status;
  EXPECT_NE(result_a.status.message().find("expert shard down"), std::string::npos);
  EXPECT_TRUE(result_b.status.ok()) << result_b.status;
  EXPECT_EQ(result_b.tokens.size(), 1u);
  // The blocker's second MoE layer, then the failed joint step and the two solo retries.
  EXPECT_GE(s.experts.calls - calls_before, 1 + 1 + 1 + 2);
  // Recovery: the same request succeeds once the expert is back.
  s.experts.failing_expert = -2;
  EXPECT_TRUE(Drain(**scheduler.Submit(Params(prompts[0], 1))).status.ok());
}

TEST(BatchSchedulerTest, QueueLimitsAndDraining) {
  SchedulerModel s;
  SchedulerOptions options;
  options.max_running_sequences = 1;
  options.max_waiting_sequences = 1;
  BatchScheduler scheduler(*s.model, options);
  auto first = scheduler.Submit(Params({1}, 100));
  ASSERT_TRUE(first.ok());
  // Wait until the first runs, then one may wait and a third is refused.
  for (int i = 0; i < 200 && scheduler.running_sequences() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto second = scheduler.Submit(Params({2}, 2));
  ASSERT_TRUE(second.ok());
  auto third = scheduler.Submit(Params({3}, 2));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  scheduler.StopAdmitting();
  EXPECT_EQ(scheduler.Submit(Params({4}, 2)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(Drain(**first).status.ok());
  EXPECT_TRUE(Drain(**second).status.ok());
}

}  // namespace
}  // namespace expertmesh::attention_service
