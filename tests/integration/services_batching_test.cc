// Continuous batching through the real services: several concurrent sequences with different
// prompt lengths and budgets, started at different times so prefills join a running batch, each
// equal to the same request run alone (and to the monolithic model); Describe sees them batched.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/reference_generation.h"
#include "tests/integration/service_cluster.h"

namespace expertmesh::testing {
namespace {

std::vector<v1::SequenceRequest> MixedRequests() {
  std::vector<v1::SequenceRequest> requests;
  const int lengths[] = {3, 17, 1, 8, 30, 5};
  const uint32_t budgets[] = {24, 6, 30, 16, 10, 20};
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < lengths[i]; ++t) prompt.push_back(2 + (13 * t + 29 * i) % 250);
    requests.push_back(MakeRequest(prompt, budgets[i]));
    // Stop ids that none of these greedy runs hits early: only the model's EOS can end them.
  }
  requests[3].mutable_sampling()->set_temperature(0.7f);
  requests[3].mutable_sampling()->set_seed(7);
  return requests;
}

class ContinuousBatching : public ::testing::TestWithParam<int> {};

TEST_P(ContinuousBatching, ConcurrentSequencesEqualTheirSoloRuns) {
  const int micro_batches = GetParam();
  ClusterOptions options;
  options.model_directory = SourcePath("tests/fixtures/v3_tiny");
  options.num_shards = 2;
  options.attention_flags = {absl::StrCat("--micro-batches=", micro_batches)};
  auto cluster = ServiceCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto reference = ReferenceModel::Load(options.model_directory);
  ASSERT_TRUE(reference.ok()) << reference.status();

  const std::vector<v1::SequenceRequest> requests = MixedRequests();
  std::vector<GenerationOutput> solo;
  for (const auto& request : requests) solo.push_back(RunGenerate((*cluster)->stub(), request));

  // All together, staggered so later prompts join a batch that is already decoding.
  std::atomic<bool> done{false};
  std::atomic<uint32_t> most_running{0};
  std::thread watcher([&] {
    auto stub = v1::AttentionService::NewStub((*cluster)->channel());
    while (!done) {
      grpc::ClientContext context;
      v1::AttentionDescription description;
      if (stub->Describe(&context, v1::DescribeAttentionRequest(), &description).ok()) {
        most_running = std::max(most_running.load(), description.running_sequences());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  std::vector<GenerationOutput> together(requests.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i) {
    clients.emplace_back([&, i] {
      std::this_thread::sleep_for(std::chrono::milliseconds(3 * i));
      together[i] = RunGenerate((*cluster)->stub(), requests[i]);
    });
  }
  for (auto& client : clients) client.join();
  done = true;
  watcher.join();

  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("sequence ", i));
    ASSERT_TRUE(solo[i].status.ok()) << solo[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    auto expected = (*reference)->Generate(requests[i]);
    ASSERT_TRUE(expected.ok()) << expected.status();
    EXPECT_EQ(solo[i].tokens, expected->tokens);
    EXPECT_EQ(together[i].tokens, solo[i].tokens);
    ASSERT_EQ(together[i].logits.size(), solo[i].logits.size());
    for (size_t t = 0; t < solo[i].logits.size(); ++t) {
      // Batching changes the row counts of the matrix products (OpenBLAS picks kernels by
      // shape), so the float sums may round differently: equal within 1e-5, not bitwise.
      EXPECT_LE(MaxRelativeDifference(together[i].logits[t], solo[i].logits[t]), 1e-5) << "token " << t;
    }
    EXPECT_EQ(together[i].usage.completion_tokens(), solo[i].usage.completion_tokens());
    EXPECT_EQ(together[i].usage.finish_reason(), solo[i].usage.finish_reason());
  }
  EXPECT_GE(most_running.load(), 3u) << "the sequences never ran in one batch";
}

INSTANTIATE_TEST_SUITE_P(MicroBatches, ContinuousBatching, ::testing::Values(1, 2),
                         [](const auto& info) { return absl::StrCat(info.param, "_micro_batches"); });

TEST(ContinuousBatchingCancel, CancelledSequenceLeavesOthersRunning) {
  ClusterOptions options;
  options.model_directory = SourcePath("tests/fixtures/v3_tiny");
  options.num_shards = 1;
  auto cluster = ServiceCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const v1::SequenceRequest long_request = MakeRequest({4, 5, 6}, 100);
  const GenerationOutput alone = RunGenerate((*cluster)->stub(), long_request);
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();

  // A client that reads two tokens and cancels, next to a full run.
  GenerationOutput full;
  std::thread runner([&] { full = RunGenerate((*cluster)->stub(), long_request); });
  {
    grpc::ClientContext context;
    auto reader = (*cluster)->stub().Generate(&context, MakeRequest({9, 9, 9, 9}, 100));
    v1::SequenceEvent event;
    ASSERT_TRUE(reader->Read(&event));
    ASSERT_TRUE(reader->Read(&event));
    context.TryCancel();
    while (reader->Read(&event)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  runner.join();
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  EXPECT_EQ(full.tokens, alone.tokens);
  // The cancelled sequence is gone from the batch.
  for (int attempt = 0; attempt < 100; ++attempt) {
    grpc::ClientContext context;
    v1::AttentionDescription description;
    ASSERT_TRUE((*cluster)->stub().Describe(&context, v1::DescribeAttentionRequest(), &description).ok());
    if (description.running_sequences() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_LT(attempt, 99) << "cancelled sequence still running";
  }
}

}  // namespace
}  // namespace expertmesh::testing
