// ExpertFanout against in-process ExpertService servers on loopback (random experts): equal to
// local experts (bitwise with one shard), placement checks at start-up, replica failover,
// UNAVAILABLE when no replica is left and recovery after a restart, deadlines, bf16 on the wire.
#include "attention-svc/expert_fanout.h"

#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/model/deepseek_model.h"
#include "engine/rpc/server_runner.h"
#include "expert-svc/expert_service.h"
#include "tests/unit/model/model_test_util.h"

namespace expertmesh::attention_service {
namespace {

using expert_service::ExpertServiceImpl;
using expert_service::ExpertShard;

// Forwards to shared local experts, optionally slowly (a shard that hangs).
class ForwardingExperts : public RoutedExperts {
 public:
  ForwardingExperts(RoutedExperts* inner, std::chrono::milliseconds delay) : inner_(inner), delay_(delay) {}
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override {
    std::this_thread::sleep_for(delay_);
    return inner_->Compute(batch, output);
  }

 private:
  RoutedExperts* inner_;
  std::chrono::milliseconds delay_;
};

// One in-process expert-svc: shard `index` of `count`.
struct InProcessShard {
  InProcessShard(const ModelConfig& config, RoutedExperts* experts, int index, int count, int port = 0,
                 std::chrono::milliseconds delay = std::chrono::milliseconds(0))
      : shard(absl::StrCat("shard-", index), Info(config), expert_service::ShardRangeForModel(config, index, count),
              std::make_unique<ForwardingExperts>(experts, delay)),
        service(&shard) {
    rpc::ServerOptions options;
    options.listen_address = absl::StrCat("127.0.0.1:", port);
    options.drain_grace = std::chrono::milliseconds(100);
    runner = std::move(rpc::ServerRunner::Start(options, {&service}, "expertmesh.v1.ExpertService")).value();
  }
  static expert_service::ShardModelInfo Info(const ModelConfig& config) {
    expert_service::ShardModelInfo info;
    info.model_type = config.model_type;
    info.hidden_size = config.hidden_size;
    info.num_routed_experts = config.n_routed_experts;
    return info;
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", runner->port()); }
  ExpertShard shard;
  ExpertServiceImpl service;
  std::unique_ptr<rpc::ServerRunner> runner;
};

struct Fixture {
  ModelConfig config = testing::TinyV3Config();  // 8 experts, top-2, MoE layers 1 and 2
  std::unique_ptr<LocalRoutedExperts> local = testing::RandomExperts(config, 3);
  std::unique_ptr<DeepseekModel> monolithic =
      DeepseekModel::Create(config, testing::RandomModelWeights(config, 2), local.get()).value();
};

std::vector<float> Logits(const DeepseekModel& model, int64_t micro_batches) {
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4}, {5}, {60, 61}};
  std::vector<LatentKvCache> caches;
  std::vector<SequenceInput> inputs;
  for (size_t i = 0; i < prompts.size(); ++i) caches.push_back(model.NewCache());
  for (size_t i = 0; i < prompts.size(); ++i) inputs.push_back({&caches[i], prompts[i], true});
  StepOptions options;
  options.micro_batches = micro_batches;
  auto logits = model.Step(inputs, options);
  EXPECT_TRUE(logits.ok()) << logits.status();
  std::vector<float> all;
  if (logits.ok()) {
    for (const Tensor& t : *logits) all.insert(all.end(), t.values().begin(), t.values().end());
  }
  return all;
}

TEST(ExpertFanoutTest, MatchesLocalExpertsForOneTwoAndFourShards) {
  Fixture f;
  const std::vector<float> expected = Logits(*f.monolithic, 1);
  for (int count : {1, 2, 4}) {
    std::vector<std::unique_ptr<InProcessShard>> shards;
    std::vector<std::string> addresses;
    for (int i = 0; i < count; ++i) {
      shards.push_back(std::make_unique<InProcessShard>(f.config, f.local.get(), i, count));
      addresses.push_back(shards.back()->address());
    }
    auto fanout = ExpertFanout::Create(f.config, addresses, {});
    ASSERT_TRUE(fanout.ok()) << fanout.status();
    auto model = DeepseekModel::Create(f.config, testing::RandomModelWeights(f.config, 2), fanout->get()).value();
    const std::vector<float> actual = Logits(*model, 1);
    if (count == 1) {
      EXPECT_EQ(actual, expected);  // same sums in the same order
    } else {
      EXPECT_LE(testing::RelativeMaxError(actual, expected), 1e-5) << count << " shards";
    }
    EXPECT_LE(testing::RelativeMaxError(Logits(*model, 2), expected), 1e-5) << count << " shards, micro-batches";
  }
}

TEST(ExpertFanoutTest, StartUpNamesMissingExpertsAndMismatchedModels) {
  Fixture f;
  InProcessShard first_half(f.config, f.local.get(), 0, 2);
  auto fanout = ExpertFanout::Create(f.config, {first_half.address()}, {});
  ASSERT_FALSE(fanout.ok());
  EXPECT_EQ(fanout.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(fanout.status().message().find("no expert shard hosts expert(s) 4,5,6,7 of layer 1"), std::string::npos)
      << fanout.status();
  ModelConfig wider = f.config;
  wider.hidden_size = 48;
  fanout = ExpertFanout::Create(wider, {first_half.address()}, {});
  ASSERT_FALSE(fanout.ok());
  EXPECT_NE(fanout.status().message().find("serves hidden_size 32"), std::string::npos) << fanout.status();
  FanoutOptions quick;
  quick.connect_timeout = std::chrono::milliseconds(300);
  fanout = ExpertFanout::Create(f.config, {"127.0.0.1:1"}, quick);
  EXPECT_EQ(fanout.status().code(), absl::StatusCode::kUnavailable) << fanout.status();
}

absl::Status RunLayer(ExpertFanout& fanout, const ModelConfig& config, std::vector<float>* output,
                      std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max()) {
  static const std::vector<float> activations(2 * 32, 0.25f);
  static const std::vector<int32_t> ids = {0, 5, 7, 2};
  static const std::vector<float> weights = {0.5f, 0.5f, 0.25f, 0.75f};
  RoutedExpertBatch batch;
  batch.layer = 1;
  batch.num_tokens = 2;
  batch.hidden_size = config.hidden_size;
  batch.top_k = 2;
  batch.activations = activations;
  batch.expert_ids = ids;
  batch.gate_weights = weights;
  batch.deadline = deadline;
  output->assign(2 * 32, 0.0f);
  return fanout.Compute(batch, *output);
}

TEST(ExpertFanoutTest, FailsOverToTheOtherReplicaThenReportsUnavailableThenRecovers) {
  Fixture f;
  auto replica_a = std::make_unique<InProcessShard>(f.config, f.local.get(), 0, 1);
  auto replica_b = std::make_unique<InProcessShard>(f.config, f.local.get(), 0, 1);
  const int port_b = replica_b->runner->port();
  FanoutOptions options;
  options.reconnect_interval = std::chrono::milliseconds(50);
  auto fanout = ExpertFanout::Create(f.config, {replica_a->address(), replica_b->address()}, options);
  ASSERT_TRUE(fanout.ok()) << fanout.status();
  std::vector<float> expected(64, 0.0f), output;
  {
    RoutedExpertBatch batch;
    ASSERT_TRUE(RunLayer(**fanout, f.config, &expected).ok());
  }
  replica_a.reset();  // gone: every call still succeeds through replica b
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(RunLayer(**fanout, f.config, &output).ok()) << "call " << i;
    EXPECT_EQ(output, expected);
  }
  EXPECT_EQ((*fanout)->num_healthy_replicas(), 1);
  replica_b.reset();  // no replica left: UNAVAILABLE, fast
  const auto start = std::chrono::steady_clock::now();
  const absl::Status down = RunLayer(**fanout, f.config, &output);
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ((*fanout)->num_unreachable_groups(), 1);
  // Replica b comes back on its port: the reconnect loop picks it up.
  replica_b = std::make_unique<InProcessShard>(f.config, f.local.get(), 0, 1, port_b);
  absl::Status recovered;
  for (int i = 0; i < 100; ++i) {
    recovered = RunLayer(**fanout, f.config, &output);
    if (recovered.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(recovered.ok()) << recovered;
  EXPECT_EQ(output, expected);
}

TEST(ExpertFanoutTest, DeadlineBoundsASlowShard) {
  Fixture f;
  InProcessShard slow(f.config, f.local.get(), 0, 1, 0, std::chrono::milliseconds(500));
  auto fanout = ExpertFanout::Create(f.config, {slow.address()}, {});
  ASSERT_TRUE(fanout.ok()) << fanout.status();
  std::vector<float> output;
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = RunLayer(**fanout, f.config, &output, start + std::chrono::milliseconds(100));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_LT(elapsed, std::chrono::milliseconds(400));
  // The late reply is dropped; the next call with time to spare works.
  EXPECT_TRUE(RunLayer(**fanout, f.config, &output).ok());
}

TEST(ExpertFanoutTest, Bf16WireIsCloseButNotExact) {
  Fixture f;
  InProcessShard shard(f.config, f.local.get(), 0, 1);
  FanoutOptions f32_options, bf16_options;
  bf16_options.wire_dtype = v1::TENSOR_DTYPE_BF16;
  auto exact = ExpertFanout::Create(f.config, {shard.address()}, f32_options);
  auto rounded = ExpertFanout::Create(f.config, {shard.address()}, bf16_options);
  ASSERT_TRUE(exact.ok() && rounded.ok());
  std::vector<float> a, b;
  ASSERT_TRUE(RunLayer(**exact, f.config, &a).ok());
  ASSERT_TRUE(RunLayer(**rounded, f.config, &b).ok());
  const double error = testing::RelativeMaxError(b, a);
  EXPECT_GT(error, 0.0);
  EXPECT_LT(error, 1e-2);
  // Half the payload bytes each way.
  EXPECT_EQ((*rounded)->connections()[0]->payload_bytes_sent() * 2, (*exact)->connections()[0]->payload_bytes_sent());
}

TEST(ResolveShardAddressesTest, ListsFilesAndDns) {
  auto listed = ResolveShardAddresses(" 127.0.0.1:5001, 127.0.0.1:5002 ");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(*listed, (std::vector<std::string>{"127.0.0.1:5001", "127.0.0.1:5002"}));
  auto resolved = ResolveShardAddresses("dns:localhost:5003");
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_FALSE(resolved->empty());
  for (const std::string& address : *resolved) EXPECT_TRUE(absl::EndsWith(address, ":5003")) << address;
  const std::string file = ::testing::TempDir() + "/shards.txt";
  std::ofstream(file) << "# shards\n127.0.0.1:6001\n\n127.0.0.1:6002\n";
  auto from_file = ResolveShardAddresses("@" + file);
  ASSERT_TRUE(from_file.ok());
  EXPECT_EQ(from_file->size(), 2u);
  EXPECT_EQ(ResolveShardAddresses("@/nonexistent/list").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolveShardAddresses("dns:nohost").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveShardAddresses(" , ").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace expertmesh::attention_service
