// The metrics wiring of the service building blocks, on real loopback servers: ServerRunner's
// configure_builder hook (its error aborts Start; the gRPC interceptor installed through it counts
// calls), ExpertFanout's per-shard round trips, bytes and whole-layer fan-outs against the
// connections' own counters, the expert shards' per-expert token-slots against the routed
// token count, and one failover per lost replica.
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <prometheus/text_serializer.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "attention-svc/expert_fanout.h"
#include "engine/metrics/moe_metrics.h"
#include "engine/metrics/service_metrics.h"
#include "engine/model/deepseek_model.h"
#include "engine/rpc/server_runner.h"
#include "expert-svc/expert_service.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/unit/metrics/exposition_test_util.h"
#include "tests/unit/model/model_test_util.h"

namespace expertmesh {
namespace {

using metrics::testing::SeriesKey;

metrics::testing::Exposition Scrape(prometheus::Registry& registry) {
  prometheus::TextSerializer serializer;
  auto parsed = metrics::testing::ParseExposition(serializer.Serialize(registry.Collect()));
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : metrics::testing::Exposition{};
}

double Value(const metrics::testing::Exposition& exposition, const std::string& key) {
  return exposition.Value(key).value_or(-1);
}

TEST(ServerRunnerHookTest, AnErrorFromTheHookAbortsStart) {
  rpc::ServerOptions options;
  bool called = false;
  options.configure_builder = [&called](grpc::ServerBuilder&) {
    called = true;
    return absl::FailedPreconditionError("no metrics today");
  };
  auto runner = rpc::ServerRunner::Start(options, {}, "test.Service");
  EXPECT_TRUE(called);
  ASSERT_FALSE(runner.ok());
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(runner.status().message(), "no metrics today");
}

TEST(ServerRunnerHookTest, TheInterceptorInstalledByTheHookCountsCalls) {
  metrics::ServiceMetrics service_metrics("expert");
  rpc::ServerOptions options;
  options.configure_builder = [&](grpc::ServerBuilder& builder) {
    return service_metrics.InstallGrpcMetrics(builder, {"expertmesh.v1.ExpertService"});
  };
  auto runner = rpc::ServerRunner::Start(options, {}, "expertmesh.v1.ExpertService");
  ASSERT_TRUE(runner.ok()) << runner.status();
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*runner)->port()), grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  for (const char* service : {"", "expertmesh.v1.ExpertService", "no.such.Service"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    stub->Check(&context, request, &response);
  }
  const auto scraped = Scrape(service_metrics.registry());
  const std::map<std::string, std::string> check = {
      {"grpc_type", "unary"}, {"grpc_service", "grpc.health.v1.Health"}, {"grpc_method", "Check"}};
  EXPECT_EQ(Value(scraped, SeriesKey("grpc_server_started_total", check)), 3);
  auto ok = check;
  ok["grpc_code"] = "OK";
  auto not_found = check;
  not_found["grpc_code"] = "NotFound";
  EXPECT_EQ(Value(scraped, SeriesKey("grpc_server_handled_total", ok)), 2);
  EXPECT_EQ(Value(scraped, SeriesKey("grpc_server_handled_total", not_found)), 1);
}

// One in-process expert-svc serving shard `index` of `count` with per-expert load metrics.
struct MeteredShard {
  MeteredShard(const ModelConfig& config, RoutedExperts* experts, int index, int count)
      : shard(absl::StrCat("shard-", index), Info(config), expert_service::ShardRangeForModel(config, index, count),
              std::make_unique<Forwarding>(experts)),
        service(&shard) {
    std::vector<int> layers;
    std::set<int> expert_ids;
    for (const auto& [layer, hosted] : shard.hosted()) {
      layers.push_back(static_cast<int>(layer));
      expert_ids.insert(hosted.begin(), hosted.end());
    }
    load = metrics::ExpertLoadMetrics::Create(registry, layers, std::vector<int>(expert_ids.begin(), expert_ids.end()))
               .value();
    service.set_load_metrics(load.get());
    rpc::ServerOptions options;
    options.drain_grace = std::chrono::milliseconds(100);
    runner = std::move(rpc::ServerRunner::Start(options, {&service}, "expertmesh.v1.ExpertService")).value();
  }
  struct Forwarding : RoutedExperts {
    explicit Forwarding(RoutedExperts* inner) : inner(inner) {}
    absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override {
      return inner->Compute(batch, output);
    }
    RoutedExperts* inner;
  };
  static expert_service::ShardModelInfo Info(const ModelConfig& config) {
    expert_service::ShardModelInfo info;
    info.model_type = config.model_type;
    info.hidden_size = config.hidden_size;
    info.num_routed_experts = config.n_routed_experts;
    return info;
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", runner->port()); }
  double TokenSlots() {
    double slots = 0;
    for (const auto& [key, value] : Scrape(registry).samples) {
      if (key.rfind("expertmesh_moe_expert_tokens_total{", 0) == 0) slots += value;
    }
    return slots;
  }

  prometheus::Registry registry;
  std::unique_ptr<metrics::ExpertLoadMetrics> load;
  expert_service::ExpertShard shard;
  expert_service::ExpertServiceImpl service;
  std::unique_ptr<rpc::ServerRunner> runner;
};

struct Fixture {
  ModelConfig config = testing::TinyV3Config();  // 8 experts, top-2, MoE layers 1 and 2
  std::unique_ptr<LocalRoutedExperts> local = testing::RandomExperts(config, 3);
};

// One step over 3 prompts (7 tokens).
void Step(const DeepseekModel& model) {
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4}, {5}, {60, 61}};
  std::vector<LatentKvCache> caches;
  std::vector<SequenceInput> inputs;
  for (size_t i = 0; i < prompts.size(); ++i) caches.push_back(model.NewCache());
  for (size_t i = 0; i < prompts.size(); ++i) inputs.push_back({&caches[i], prompts[i], false});
  ASSERT_TRUE(model.Step(inputs, StepOptions()).ok());
}

TEST(FanoutMetricsTest, RoundTripsBytesLayersAndTokenSlotsMatchWhatWasSent) {
  Fixture f;
  MeteredShard first(f.config, f.local.get(), 0, 2), second(f.config, f.local.get(), 1, 2);
  prometheus::Registry registry;
  metrics::MoeFanoutMetrics fanout_metrics(registry, 2);
  attention_service::FanoutOptions options;
  options.metrics = &fanout_metrics;
  auto fanout = attention_service::ExpertFanout::Create(f.config, {first.address(), second.address()}, options);
  ASSERT_TRUE(fanout.ok()) << fanout.status();
  auto model = DeepseekModel::Create(f.config, testing::RandomModelWeights(f.config, 2), fanout->get()).value();
  Step(*model);
  Step(*model);

  const auto scraped = Scrape(registry);
  EXPECT_EQ(Value(scraped, SeriesKey("expertmesh_moe_layer_fanout_seconds_count")), 2 * 2);  // steps x MoE layers
  double round_trips = 0;
  for (int shard = 0; shard < 2; ++shard) {
    const std::string label = std::to_string(shard);
    const auto& connection = *(*fanout)->connections()[shard];
    const double trips = Value(scraped, SeriesKey("expertmesh_moe_fanout_seconds_count", {{"shard", label}}));
    EXPECT_GT(trips, 0) << shard;
    EXPECT_LE(trips, 2 * 2) << shard;
    round_trips += trips;
    EXPECT_EQ(Value(scraped, SeriesKey("expertmesh_moe_sent_bytes_total", {{"shard", label}})),
              static_cast<double>(connection.payload_bytes_sent()));
    EXPECT_EQ(Value(scraped, SeriesKey("expertmesh_moe_received_bytes_total", {{"shard", label}})),
              static_cast<double>(connection.payload_bytes_received()));
    EXPECT_EQ(Value(scraped, SeriesKey("expertmesh_moe_shard_failovers_total", {{"shard", label}})), 0);
  }
  EXPECT_GE(round_trips, 2 * 2);
  // Every token-slot of every MoE layer is counted once, on the shard that hosts its expert:
  // 2 steps x 7 tokens x 2 MoE layers x top-2.
  EXPECT_EQ(first.TokenSlots() + second.TokenSlots(), 2 * 7 * 2 * 2);
  EXPECT_GT(first.TokenSlots(), 0);
  EXPECT_GT(second.TokenSlots(), 0);
}

TEST(FanoutMetricsTest, OneFailoverPerLostReplicaWithALivePeer) {
  Fixture f;
  auto replica_a = std::make_unique<MeteredShard>(f.config, f.local.get(), 0, 1);
  auto replica_b = std::make_unique<MeteredShard>(f.config, f.local.get(), 0, 1);
  prometheus::Registry registry;
  metrics::MoeFanoutMetrics fanout_metrics(registry, 2);
  attention_service::FanoutOptions options;
  options.metrics = &fanout_metrics;
  options.reconnect_interval = std::chrono::milliseconds(50);
  auto fanout = attention_service::ExpertFanout::Create(f.config, {replica_a->address(), replica_b->address()}, options);
  ASSERT_TRUE(fanout.ok()) << fanout.status();
  auto model = DeepseekModel::Create(f.config, testing::RandomModelWeights(f.config, 2), fanout->get()).value();
  Step(*model);
  auto failovers = [&](int shard) {
    return Value(Scrape(registry), SeriesKey("expertmesh_moe_shard_failovers_total", {{"shard", std::to_string(shard)}}));
  };
  replica_a.reset();  // its traffic moves to replica b
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (failovers(0) < 1 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(failovers(0), 1);
  for (int i = 0; i < 3; ++i) Step(*model);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // several reconnect rounds
  EXPECT_EQ(failovers(0), 1);  // one failure, one failover: not one per round or request
  EXPECT_EQ(failovers(1), 0);
  replica_b.reset();  // no peer left: nothing can move, so it is not a failover
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(failovers(1), 0);
}

}  // namespace
}  // namespace expertmesh
