// router-svc over two attention-svc replicas (both in front of the same two expert-svc shards):
// requests are spread over both, every answer equals the in-process engine's, and when one
// replica is killed the requests that follow still complete on the other.
#include <future>
#include <map>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/integration/reference_generation.h"
#include "tests/integration/router/router_client.h"
#include "tests/integration/service_cluster.h"

namespace expertmesh::testing {
namespace {

constexpr char kPrompt[] = "Once upon a time there was";
constexpr uint32_t kTokens = 24;

// Requests each replica served, from router-svc's per-request log lines ("... replica=ADDR ...").
std::map<std::string, int> ServedPerReplica(const std::string& log) {
  std::map<std::string, int> served;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (!absl::StartsWith(line, "generate OK")) continue;
    const size_t at = line.find("replica=");
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = line.substr(at + 8);
    served[std::string(rest.substr(0, rest.find(' ')))]++;
  }
  return served;
}

TEST(RouterReplicasTest, BalancesAndSurvivesAReplicaKill) {
  auto tokenizer = Tokenizer::FromFile(SourcePath("models/tokenizer.json"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto reference = ReferenceModel::Load(SourcePath("models/prose"));
  ASSERT_TRUE(reference.ok()) << reference.status();
  const auto expected = (*reference)->Generate(MakeRequest(*(*tokenizer)->Encode(kPrompt), kTokens, false));
  ASSERT_TRUE(expected.ok()) << expected.status();

  ClusterOptions options;
  options.model_directory = SourcePath("models/prose");
  options.num_shards = 2;
  options.start_attention = false;
  auto cluster = ServiceCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // Both attention replicas start at once (each start waits for its health check).
  auto start_attention = [&](const std::string& name, int port = 0) {
    return ServiceProcess::Start(name, BinaryPath("attention-svc"),
                                 {absl::StrCat("--model=", options.model_directory),
                                  absl::StrCat("--expert-shards=", absl::StrJoin((*cluster)->shard_addresses(), ","))},
                                 std::chrono::seconds(60), port);
  };
  auto first_start = std::async(std::launch::async, start_attention, "attention-svc-1", 0);
  auto second = start_attention("attention-svc-2");
  auto first = first_start.get();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  const std::string first_address = (*first)->address();
  const std::string second_address = (*second)->address();
  auto router = StartRouter("router-svc-replicas", {first_address, second_address});
  ASSERT_TRUE(router.ok()) << router.status();
  RouterClient client((*router)->address());

  // Concurrent requests: least-outstanding balancing puts them on both replicas.
  std::vector<std::future<RouterOutput>> calls;
  for (int i = 0; i < 6; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return client.Generate(TextRequest(kPrompt, kTokens)); }));
  }
  for (auto& call : calls) {
    const RouterOutput output = call.get();
    ASSERT_TRUE(output.status.ok()) << output.status.error_message();
    EXPECT_EQ(output.ids, expected->tokens);
  }
  // Sequential requests alternate between idle replicas.
  for (int i = 0; i < 4; ++i) {
    const RouterOutput output = client.Generate(TextRequest(kPrompt, kTokens));
    ASSERT_TRUE(output.status.ok()) << output.status.error_message();
    EXPECT_EQ(output.ids, expected->tokens);
  }
  std::map<std::string, int> served = ServedPerReplica((*router)->ReadLog());
  EXPECT_GE(served[first_address], 3) << (*router)->ReadLog();
  EXPECT_GE(served[second_address], 3) << (*router)->ReadLog();
  EXPECT_EQ(served[first_address] + served[second_address], 10);

  // A crash: the router still thinks the replica is healthy for a moment; calls that hit it fail
  // UNAVAILABLE before any token and are retried on the survivor.
  (*first)->Kill();
  for (int i = 0; i < 6; ++i) {
    const RouterOutput output = client.Generate(TextRequest(kPrompt, kTokens));
    ASSERT_TRUE(output.status.ok()) << "request " << i << " after the kill: " << output.status.error_message();
    EXPECT_EQ(output.ids, expected->tokens);
    EXPECT_EQ(output.usage.finish_reason(), v1::FINISH_REASON_LENGTH);
  }
  served = ServedPerReplica((*router)->ReadLog());
  EXPECT_EQ(served[second_address], 16 - served[first_address]);

  // The replica comes back on its address: the router's probes find it and it serves again.
  const int served_before_restart = served[first_address];
  auto restarted = start_attention("attention-svc-1-restarted", (*first)->port());
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (ServedPerReplica((*router)->ReadLog())[first_address] == served_before_restart &&
         std::chrono::steady_clock::now() < give_up) {
    const RouterOutput output = client.Generate(TextRequest(kPrompt, 4));
    ASSERT_TRUE(output.status.ok()) << output.status.error_message();
  }
  EXPECT_GT(ServedPerReplica((*router)->ReadLog())[first_address], served_before_restart)
      << "the restarted replica should be used again";
  EXPECT_EQ((*router)->Terminate(), 0);
}

}  // namespace
}  // namespace expertmesh::testing
