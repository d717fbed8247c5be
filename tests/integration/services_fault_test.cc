// Expert failures during generation, with real processes: kill -9 of one of two replicas of a
// shard (every request completes, with the monolithic tokens), kill -9 of a shard's only replica
// (its requests end UNAVAILABLE well within their deadlines, attention-svc keeps serving and
// recovers once the shard is back on its port), a hung shard (DEADLINE_EXCEEDED at the request's
// deadline), and a graceful SIGTERM of a replica (traffic moves to the other one, no errors).
// attention-svc's health is NOT_SERVING while a shard group is unreachable.
#include <signal.h>

#include <latch>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/integration/reference_generation.h"
#include "tests/integration/service_cluster.h"

namespace expertmesh::testing {
namespace {

using std::chrono::milliseconds;

constexpr uint32_t kLongTokens = 100;

// Sampled requests that the monolithic model runs for all kLongTokens tokens without meeting
// the end-of-sequence token (chosen by seed, deterministically), so they are surely still
// generating when a shard fails.
const std::vector<v1::SequenceRequest>& LongRequests() {
  static const std::vector<v1::SequenceRequest> requests = [] {
    std::vector<v1::SequenceRequest> chosen;
    auto reference = ReferenceModel::Load(SourcePath("tests/fixtures/v3_tiny"));
    EXPECT_TRUE(reference.ok()) << reference.status();
    for (uint64_t seed = 1; reference.ok() && chosen.size() < 4 && seed < 500; ++seed) {
      v1::SequenceRequest request = MakeRequest({static_cast<int32_t>(10 + seed % 200), 20, 30}, kLongTokens,
                                                /*include_logits=*/false);
      request.mutable_sampling()->set_temperature(1.0f);
      request.mutable_sampling()->set_seed(seed);
      auto output = (*reference)->Generate(request);
      if (output.ok() && output->tokens.size() == kLongTokens) chosen.push_back(request);
    }
    EXPECT_EQ(chosen.size(), 4u) << "not enough long-running requests";
    return chosen;
  }();
  return requests;
}

v1::SequenceRequest LongRequest(int i) { return LongRequests().at(i); }

// Runs `count` generations; each reads `tokens_before` tokens, then all wait until `between`
// has run (e.g. killing a shard), then they read to the end.
std::vector<GenerationOutput> GenerateAround(ServiceCluster& cluster, int count, int tokens_before,
                                             const std::function<void()>& between, milliseconds timeout) {
  std::vector<GenerationOutput> outputs(count);
  std::latch started(count + 1), resumed(1);
  std::vector<std::thread> clients;
  for (int i = 0; i < count; ++i) {
    clients.emplace_back([&, i] {
      GenerationOutput& output = outputs[i];
      const auto start = std::chrono::steady_clock::now();
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + timeout);
      auto reader = cluster.stub().Generate(&context, LongRequest(i));
      v1::SequenceEvent event;
      bool reading = true;
      for (int t = 0; t < tokens_before && (reading = reader->Read(&event)); ++t) {
        if (event.has_token()) output.tokens.push_back(event.token().token_id());
      }
      started.count_down();
      resumed.wait();
      while (reading && reader->Read(&event)) {
        if (event.has_token()) output.tokens.push_back(event.token().token_id());
        if (event.has_usage()) {
          output.has_usage = true;
          output.usage = event.usage();
        }
      }
      output.status = reader->Finish();
      output.elapsed = std::chrono::steady_clock::now() - start;
    });
  }
  started.arrive_and_wait();
  between();
  resumed.count_down();
  for (auto& client : clients) client.join();
  return outputs;
}

// Readiness of attention-svc (NOT_SERVING while an expert shard group is unreachable).
grpc::health::v1::HealthCheckResponse::ServingStatus AttentionHealth(ServiceCluster& cluster) {
  auto health = grpc::health::v1::Health::NewStub(cluster.channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + milliseconds(2000));
  grpc::health::v1::HealthCheckResponse response;
  if (!health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok()) {
    return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }
  return response.status();
}

ClusterOptions TwoShards(int replicas) {
  ClusterOptions options;
  options.model_directory = SourcePath("tests/fixtures/v3_tiny");
  options.num_shards = 2;
  options.replicas_per_shard = replicas;
  return options;
}

TEST(ServicesFault, KillingOneOfTwoReplicasLosesNothing) {
  auto cluster = ServiceCluster::Start(TwoShards(2));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto reference = ReferenceModel::Load(SourcePath("tests/fixtures/v3_tiny"));
  ASSERT_TRUE(reference.ok()) << reference.status();
  const auto outputs = GenerateAround(**cluster, 4, 3, [&] { (*cluster)->shard(1, 0).Kill(); }, milliseconds(30000));
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(absl::StrCat("sequence ", i));
    ASSERT_TRUE(outputs[i].status.ok()) << outputs[i].status.error_message();
    auto expected = (*reference)->Generate(LongRequest(i));
    ASSERT_TRUE(expected.ok());
    EXPECT_EQ(outputs[i].tokens, expected->tokens);
  }
  // Then the other shard's replica goes away gracefully: still no errors.
  const auto drained = GenerateAround(**cluster, 2, 2, [&] { EXPECT_EQ((*cluster)->shard(0, 1).Terminate(), 0); },
                                      milliseconds(30000));
  for (const auto& output : drained) EXPECT_TRUE(output.status.ok()) << output.status.error_message();
}

TEST(ServicesFault, KillingTheOnlyReplicaEndsItsRequestsThenRecovers) {
  auto cluster = ServiceCluster::Start(TwoShards(1));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const milliseconds deadline(8000);
  const auto outputs = GenerateAround(**cluster, 3, 2, [&] { (*cluster)->shard(1).Kill(); }, deadline);
  for (const auto& output : outputs) {
    EXPECT_EQ(output.status.error_code(), grpc::StatusCode::UNAVAILABLE) << output.status.error_message();
    EXPECT_NE(output.status.error_message().find("expert shard"), std::string::npos) << output.status.error_message();
    EXPECT_LT(output.elapsed, deadline / 2) << "the failure took too long to surface";
    EXPECT_LT(output.tokens.size(), kLongTokens);
    ASSERT_TRUE(output.has_usage);
    EXPECT_EQ(output.usage.finish_reason(), v1::FINISH_REASON_ABORTED);
    EXPECT_EQ(output.usage.completion_tokens(), output.tokens.size());
  }
  // attention-svc is still serving: Describe answers, new requests fail fast.
  {
    grpc::ClientContext context;
    v1::AttentionDescription description;
    ASSERT_TRUE((*cluster)->stub().Describe(&context, v1::DescribeAttentionRequest(), &description).ok());
    EXPECT_EQ(description.expert_shards_size(), 2);
    EXPECT_EQ(description.healthy_expert_shards(), 1u);
    const GenerationOutput refused = RunGenerate((*cluster)->stub(), MakeRequest({1, 2, 3}, 5), milliseconds(5000));
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_LT(refused.elapsed, milliseconds(2000));
    for (int attempt = 0; attempt < 100 && AttentionHealth(**cluster) == grpc::health::v1::HealthCheckResponse::SERVING;
         ++attempt) {
      std::this_thread::sleep_for(milliseconds(20));
    }
    EXPECT_EQ(AttentionHealth(**cluster), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  // The shard comes back on the same port: attention-svc reconnects and serves again.
  ASSERT_TRUE((*cluster)->RestartShard(1).ok());
  auto reference = ReferenceModel::Load(SourcePath("tests/fixtures/v3_tiny"));
  ASSERT_TRUE(reference.ok());
  const v1::SequenceRequest request = MakeRequest({7, 8, 9}, 8);
  auto expected = (*reference)->Generate(request);
  ASSERT_TRUE(expected.ok());
  GenerationOutput recovered;
  for (int attempt = 0; attempt < 50; ++attempt) {
    recovered = RunGenerate((*cluster)->stub(), request, milliseconds(5000));
    if (recovered.status.ok()) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  ASSERT_TRUE(recovered.status.ok()) << recovered.status.error_message();
  EXPECT_EQ(recovered.tokens, expected->tokens);
  for (int attempt = 0; attempt < 50 && AttentionHealth(**cluster) != grpc::health::v1::HealthCheckResponse::SERVING;
       ++attempt) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(AttentionHealth(**cluster), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(ServicesFault, HungShardEndsRequestsAtTheirDeadline) {
  auto cluster = ServiceCluster::Start(TwoShards(1));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const milliseconds deadline(1500);
  const pid_t shard = (*cluster)->shard(0).pid();
  const auto outputs = GenerateAround(**cluster, 2, 1, [&] { kill(shard, SIGSTOP); }, deadline);
  for (const auto& output : outputs) {
    EXPECT_EQ(output.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << output.status.error_message();
    EXPECT_LT(output.elapsed, deadline + milliseconds(1000));
  }
  // The scheduler is not stuck: Describe answers while the shard is still hung.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + milliseconds(2000));
  v1::AttentionDescription description;
  EXPECT_TRUE((*cluster)->stub().Describe(&context, v1::DescribeAttentionRequest(), &description).ok());
  kill(shard, SIGCONT);
  const GenerationOutput after = RunGenerate((*cluster)->stub(), MakeRequest({5, 6}, 4), milliseconds(10000));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

}  // namespace
}  // namespace expertmesh::testing
