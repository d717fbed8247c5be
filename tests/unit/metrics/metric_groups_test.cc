// The typed recording groups (serving, MoE fan-out, expert load, blends, resources) and label
// bounds: values land in the documented series, and label values cannot grow without limit.
#include <prometheus/text_serializer.h>

#include "engine/metrics/blend_metrics.h"
#include "engine/metrics/label_limits.h"
#include "engine/metrics/moe_metrics.h"
#include "engine/metrics/resource_metrics.h"
#include "engine/metrics/serving_metrics.h"
#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_test_util.h"

namespace expertmesh::metrics {
namespace {

using testing::SeriesKey;

testing::Exposition Scrape(prometheus::Registry& registry) {
  prometheus::TextSerializer serializer;
  auto parsed = testing::ParseExposition(serializer.Serialize(registry.Collect()));
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : testing::Exposition{};
}

TEST(BoundedLabelValuesTest, AdmitsUpToTheLimitThenOther) {
  BoundedLabelValues values(2);
  EXPECT_EQ(values.Admit("a"), "a");
  EXPECT_EQ(values.Admit("b"), "b");
  EXPECT_EQ(values.Admit("c"), "other");
  EXPECT_EQ(values.Admit("a"), "a");
  EXPECT_EQ(values.Admit(""), "other");  // "default" would be a third value
  EXPECT_EQ(values.size(), 2);
  BoundedLabelValues fresh(4);
  EXPECT_EQ(fresh.Admit(""), "default");
}

TEST(ServingMetricsTest, RecordsLatenciesTokensAndOutcomesByBlend) {
  prometheus::Registry registry;
  ServingMetrics serving(registry);
  serving.RecordFinished({.blend = "", .finish = RequestFinish::kLength, .prompt_tokens = 10,
                          .generated_tokens = 11, .time_to_first_token_seconds = 0.03, .duration_seconds = 0.53});
  serving.RecordFinished({.blend = "code", .finish = RequestFinish::kError});
  serving.RecordFinished({.blend = "code", .finish = RequestFinish::kStop, .prompt_tokens = 3,
                          .generated_tokens = 1, .time_to_first_token_seconds = 0.2, .duration_seconds = 0.2});
  // Refused at admission: counted, but no duration, tokens or latencies (it never ran).
  serving.RecordFinished({.blend = "code", .finish = RequestFinish::kRejected, .prompt_tokens = 50,
                          .duration_seconds = 3.0});
  testing::Exposition scraped = Scrape(registry);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_requests_total", {{"blend", "code"}, {"finish_reason", "rejected"}})), 1);
  const std::map<std::string, std::string> by_default = {{"blend", "default"}};
  const std::map<std::string, std::string> by_code = {{"blend", "code"}};
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_requests_total", {{"blend", "default"}, {"finish_reason", "length"}})), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_requests_total", {{"blend", "code"}, {"finish_reason", "error"}})), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_requests_total", {{"blend", "code"}, {"finish_reason", "stop"}})), 1);
  // TTFT 0.03 -> bucket 0.05 (not 0.025); TPOT (0.53 - 0.03) / 10 = 0.05 -> bucket 0.05.
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_time_to_first_token_seconds_bucket", {{"blend", "default"}, {"le", "0.025"}})), 0);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_time_to_first_token_seconds_bucket", {{"blend", "default"}, {"le", "0.05"}})), 1);
  EXPECT_NEAR(*scraped.Value(SeriesKey("expertmesh_time_per_output_token_seconds_sum", by_default)), 0.05, 1e-12);
  // The error produced no token: no TTFT; the one-token request has a TTFT but no TPOT.
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_time_to_first_token_seconds_count", by_code)), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_time_per_output_token_seconds_count", by_code)), std::nullopt);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_request_duration_seconds_count", by_code)), 2);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_prompt_tokens_total", by_code)), 3);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_generation_tokens_total", by_default)), 11);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_request_generation_tokens_bucket", {{"blend", "default"}, {"le", "10"}})), 0);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_request_generation_tokens_bucket", {{"blend", "default"}, {"le", "20"}})), 1);
}

TEST(ServingMetricsTest, GaugesTrackRunningWaitingSplitAndKvCache) {
  prometheus::Registry registry;
  ServingMetrics serving(registry);
  {
    auto first = serving.TrackRunning("prose");
    auto second = serving.TrackRunning("prose");
    auto moved = std::move(second);
    EXPECT_EQ(Scrape(registry).Value(SeriesKey("expertmesh_requests_running", {{"blend", "prose"}})), 2);
  }
  EXPECT_EQ(Scrape(registry).Value(SeriesKey("expertmesh_requests_running", {{"blend", "prose"}})), 0);
  serving.SetWaitingRequests(5);
  serving.SetAbSplit({{"prose", 3}, {"code", 1}});
  serving.SetAbSplit({{"code", 1}, {"base", 1}});
  serving.SetKvCacheUsage(1024, 4096);
  serving.RecordStepBatch("decode", 12);
  serving.RecordStepBatch("bogus", 1);
  testing::Exposition scraped = Scrape(registry);
  EXPECT_EQ(scraped.Value("expertmesh_requests_waiting"), 5);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_ab_split_weight", {{"blend", "prose"}})), 0);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_ab_split_weight", {{"blend", "code"}})), 0.5);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_ab_split_weight", {{"blend", "base"}})), 0.5);
  EXPECT_EQ(scraped.Value("expertmesh_kv_cache_usage_ratio"), 0.25);
  EXPECT_EQ(scraped.Value("expertmesh_kv_cache_capacity_tokens"), 4096);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_step_batch_size_count", {{"phase", "decode"}})), 2);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_step_batch_size_count", {{"phase", "bogus"}})), std::nullopt);
}

TEST(ServingMetricsTest, BlendLabelsAreBounded) {
  prometheus::Registry registry;
  ServingMetrics serving(registry);
  for (int i = 0; i < 40; ++i) serving.RecordFinished({.blend = "blend" + std::to_string(i)});
  testing::Exposition scraped = Scrape(registry);
  int series = 0;
  for (const auto& [key, value] : scraped.samples) {
    if (key.rfind("expertmesh_requests_total{", 0) == 0) ++series;
  }
  EXPECT_EQ(series, kMaxBlendLabelValues + 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_requests_total", {{"blend", "other"}, {"finish_reason", "length"}})),
            40 - kMaxBlendLabelValues);
}

TEST(MoeMetricsTest, FanoutPerShardAndFailovers) {
  prometheus::Registry registry;
  MoeFanoutMetrics fanout(registry, 2);
  fanout.RecordShardRoundTrip(1, 0.0003, 1000, 2000);
  fanout.RecordShardRoundTrip(1, 0.0003, 24, 48);
  fanout.RecordShardRoundTrip(7, 0.1, 1, 1);  // outside the placement: "other"
  fanout.RecordLayerFanout(0.002);
  fanout.RecordShardFailover(0);
  testing::Exposition scraped = Scrape(registry);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_sent_bytes_total", {{"shard", "1"}})), 1024);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_received_bytes_total", {{"shard", "1"}})), 2048);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_fanout_seconds_bucket", {{"shard", "1"}, {"le", "0.0005"}})), 2);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_fanout_seconds_count", {{"shard", "0"}})), 0);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_fanout_seconds_count", {{"shard", "other"}})), 1);
  EXPECT_EQ(scraped.Value("expertmesh_moe_layer_fanout_seconds_count"), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_shard_failovers_total", {{"shard", "0"}})), 1);
}

TEST(MoeMetricsTest, ExpertTokensPerLayerAndExpert) {
  prometheus::Registry registry;
  std::vector<int> layers = {1, 3};
  std::vector<int> experts = {4, 5};
  auto load = ExpertLoadMetrics::Create(registry, layers, experts);
  ASSERT_TRUE(load.ok()) << load.status();
  std::vector<int32_t> ids = {4, 5, 4, -1, 9};
  EXPECT_EQ((*load)->RecordTokens(3, ids), 1);  // expert 9 is not hosted here
  EXPECT_EQ((*load)->RecordTokens(2, ids), 4);  // layer 2 is not hosted here
  testing::Exposition scraped = Scrape(registry);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_expert_tokens_total", {{"layer", "3"}, {"expert", "4"}})), 2);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_expert_tokens_total", {{"layer", "3"}, {"expert", "5"}})), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_expert_tokens_total", {{"layer", "1"}, {"expert", "4"}})), 0);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_moe_expert_tokens_total", {{"layer", "2"}, {"expert", "4"}})), std::nullopt);
  std::vector<int> bad_layers = {kMaxMoeLayers};
  EXPECT_EQ(ExpertLoadMetrics::Create(registry, bad_layers, experts).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int> bad_experts = {-2};
  EXPECT_EQ(ExpertLoadMetrics::Create(registry, layers, bad_experts).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BlendMetricsTest, WeightSetsAndSwaps) {
  prometheus::Registry registry;
  BlendMetrics blends(registry);
  blends.SetWeightSet("prose", 1000, 3);
  blends.RecordSwap("prose", true, 0.7);
  blends.RecordSwap("prose", false, 0.01);
  blends.SetWeightSet("code", 500, 1);
  blends.ClearWeightSet("code");
  testing::Exposition scraped = Scrape(registry);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_blend_weight_bytes", {{"blend", "prose"}})), 1000);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_blend_version", {{"blend", "prose"}})), 3);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_blend_weight_bytes", {{"blend", "code"}})), 0);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_blend_swaps_total", {{"blend", "prose"}, {"result", "success"}})), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_blend_swaps_total", {{"blend", "prose"}, {"result", "failure"}})), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_blend_swap_duration_seconds_count", {{"blend", "prose"}})), 2);
}

TEST(ResourceMetricsTest, DevicesAreBoundedAndInfoIsSet) {
  prometheus::Registry registry;
  ResourceMetrics resources(registry, "expert", "1.2.3");
  resources.SetDeviceMemory("cuda:1", 10, 80);
  resources.SetWeightResidentBytes("cpu", 7);
  resources.SetWeightResidentBytes("cuda:99", 1);
  resources.SetWeightResidentBytes("cuda:01", 1);
  testing::Exposition scraped = Scrape(registry);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_device_memory_used_bytes", {{"device", "cuda:1"}})), 10);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_device_memory_total_bytes", {{"device", "cuda:1"}})), 80);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_weight_resident_bytes", {{"device", "cpu"}})), 7);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_weight_resident_bytes", {{"device", "other"}})), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("expertmesh_service_info", {{"service", "expert"}, {"version", "1.2.3"}})), 1);
  EXPECT_EQ(DeviceLabel("cuda:15"), "cuda:15");
  EXPECT_EQ(DeviceLabel("cuda:16"), "other");
  EXPECT_EQ(DeviceLabel("gpu"), "other");
}

}  // namespace
}  // namespace expertmesh::metrics
