// expertmesh-inspect (the memory plan) run as a real process on the published DeepSeek-V3 and
// V2-Lite configs and on fixture checkpoints. Expected totals come from the published model
// cards (V3: 671B parameters, 37B activated, 685B on Hugging Face incl. the MTP module; V2-Lite:
// 15.7B) and from the architecture formulas written out below; the plan must also equal the
// sizes of what LoadModelFromDirectory really loads.
#include <cstdio>
#include <string>

#include "engine/model/weight_loader.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("EXPERTMESH_SOURCE_DIR");
  return dir != nullptr ? std::filesystem::path(dir) : std::filesystem::current_path();
}

struct ProcessResult {
  int exit_code = -1;
  std::string output;
};

ProcessResult Inspect(const std::string& arguments) {
  const char* binary_dir = std::getenv("EXPERTMESH_BINARY_DIR");
  const std::string binary = (binary_dir != nullptr ? std::string(binary_dir) : std::string("build")) +
                             "/bin/expertmesh-inspect";
  ProcessResult run;
  FILE* pipe = popen((binary + " " + arguments + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  size_t read = 0;
  while ((read = fread(buffer, 1, sizeof(buffer), pipe)) > 0) run.output.append(buffer, read);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

nlohmann::json InspectJson(const std::string& arguments) {
  ProcessResult run = Inspect(arguments + " --json");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  return nlohmann::json::parse(run.output, nullptr, false);
}

const std::string kV3 = (SourceDir() / "tests/fixtures/reference_configs/deepseek-v3-config.json").string();
const std::string kV2Lite = (SourceDir() / "tests/fixtures/reference_configs/deepseek-v2-lite-config.json").string();

TEST(InspectCliTest, DeepseekV3MatchesPublishedSizes) {
  const nlohmann::json plan = InspectJson("--config " + kV3 + " --expert-shards 8");
  ASSERT_FALSE(plan.is_discarded());
  EXPECT_EQ(plan["dtype"], "fp8");  // FP8 checkpoint: served in FP8 by default
  const int64_t total = plan["parameters"]["total"];
  // V=129280 H=7168 L=61 (3 dense) heads=128 q_lora=1536 kv_lora=512 nope=128 rope=64 v=128
  // I=18432 moe_I=2048 E=256: per layer attention 187,121,664 (incl. 2 norms); dense MLP 3*H*I;
  // MoE gate E*H + bias E, shared expert 3*H*2048, routed E*3*H*2048; embeddings + head 2*V*H.
  EXPECT_EQ(total, 671'026'419'200);
  EXPECT_NEAR(static_cast<double>(total) / 671e9, 1.0, 1e-3);
  const int64_t activated = plan["parameters"]["activated_per_token"];
  EXPECT_EQ(activated, 37'552'297'472);  // published: 37B
  const int64_t mtp = plan["parameters"]["mtp_not_served"];
  EXPECT_NEAR(static_cast<double>(total + mtp) / 685e9, 1.0, 1e-3);  // Hugging Face: 685B incl. MTP
  EXPECT_EQ(plan["moe_layers"], 58);
  // Expert shards: 32 experts x 58 layers x 3 matrices of 2048 x 7168 e4m3 + 16 x 56 float32 scales.
  ASSERT_EQ(plan["expert_shards"].size(), 8u);
  int64_t shard_sum = 0;
  for (const nlohmann::json& shard : plan["expert_shards"]) {
    EXPECT_EQ(shard["num_experts"], 32);
    EXPECT_EQ(shard["parameters"], int64_t{32} * 58 * 3 * 2048 * 7168);
    EXPECT_EQ(shard["bytes"], uint64_t{32} * 58 * 3 * (2048 * 7168 + 16 * 56 * 4));
    shard_sum += shard["parameters"].get<int64_t>();
  }
  EXPECT_EQ(shard_sum, plan["parameters"]["routed_experts"].get<int64_t>());
  EXPECT_EQ(plan["attention_svc"]["parameters"].get<int64_t>() + shard_sum, total);
  EXPECT_EQ(plan["router_svc"]["parameters"], 0);
  // Latent cache: 61 layers x (512 + 64) bf16 values per token.
  EXPECT_EQ(plan["kv_cache"]["bytes_per_token"], 61 * 576 * 2);
  EXPECT_EQ(plan["kv_cache"]["bytes_at_max_positions"], uint64_t{61} * 576 * 2 * 163840);
}

TEST(InspectCliTest, DtypeChangesBytesNotParameters) {
  const nlohmann::json bf16 = InspectJson("--config " + kV3 + " --dtype bf16");
  const nlohmann::json f32 = InspectJson("--config " + kV3 + " --dtype f32");
  const uint64_t attention = bf16["attention_svc"]["parameters"];
  // bf16: 2 bytes per parameter, except e_score_correction_bias (58 x 256) kept in float32.
  EXPECT_EQ(bf16["attention_svc"]["bytes"], 2 * attention + 58 * 256 * 2);
  EXPECT_EQ(f32["attention_svc"]["bytes"], 4 * attention);
  EXPECT_EQ(f32["parameters"]["total"], bf16["parameters"]["total"]);
  EXPECT_EQ(f32["kv_cache"]["bytes_per_token"], 61 * 576 * 4);
}

TEST(InspectCliTest, DeepseekV2LiteMatchesPublishedSize) {
  const nlohmann::json plan = InspectJson("--config " + kV2Lite + " --expert-shards 3");
  ASSERT_FALSE(plan.is_discarded());
  EXPECT_EQ(plan["dtype"], "bf16");
  const int64_t total = plan["parameters"]["total"];
  EXPECT_EQ(total, 15'706'484'224);
  EXPECT_NEAR(static_cast<double>(total) / 15.7e9, 1.0, 1e-3);  // published: 15.7B
  EXPECT_EQ(plan["parameters"]["mtp_not_served"], 0);
  // 64 experts over 3 shards: [0, 21), [21, 42), [42, 64).
  ASSERT_EQ(plan["expert_shards"].size(), 3u);
  EXPECT_EQ(plan["expert_shards"][0]["num_experts"], 21);
  EXPECT_EQ(plan["expert_shards"][2]["first_expert"], 42);
  EXPECT_EQ(plan["expert_shards"][2]["num_experts"], 22);
  EXPECT_EQ(plan["kv_cache"]["bytes_per_token"], 27 * 576 * 2);
}

// The plan counts exactly what the loader loads, and the checkpoint's headers agree with it.
TEST(InspectCliTest, PlanMatchesLoadedModelAndCheckpointHeaders) {
  for (const char* fixture : {"tests/fixtures/v3_tiny", "tests/fixtures/v2_lite_tiny", "models/prose"}) {
    const std::filesystem::path directory = SourceDir() / fixture;
    const nlohmann::json plan = InspectJson("--model " + directory.string() + " --dtype f32");
    ASSERT_FALSE(plan.is_discarded()) << fixture;
    auto loaded = LoadModelFromDirectory(directory);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(plan["attention_svc"]["bytes"].get<uint64_t>(), loaded->model->weights().ByteSize()) << fixture;
    EXPECT_EQ(plan["routed_experts"]["bytes"].get<uint64_t>(), loaded->routed_experts->ByteSize()) << fixture;
    EXPECT_TRUE(plan["checkpoint"]["missing"].empty()) << plan["checkpoint"].dump();
    EXPECT_TRUE(plan["checkpoint"]["mismatched"].empty()) << plan["checkpoint"].dump();
    EXPECT_EQ(plan["checkpoint"]["other_bytes"], 0) << fixture;
  }
}

TEST(InspectCliTest, TextOutputAndBadArguments) {
  const ProcessResult text = Inspect("--config " + kV3 + " --expert-shards 2");
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("671,026,419,200"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("expert-svc 1/2 [128, 256)"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("router-svc"), std::string::npos) << text.output;
  EXPECT_EQ(Inspect("--config " + kV3 + " --expert-shards 0").exit_code, 2);
  EXPECT_EQ(Inspect("--config " + kV3 + " --expert-shards 257").exit_code, 2);
  EXPECT_EQ(Inspect("--config " + kV3 + " --dtype int4").exit_code, 2);
  EXPECT_EQ(Inspect("--config " + kV3 + " --model " + kV3).exit_code, 2);
  const ProcessResult missing = Inspect("--config /nonexistent/config.json");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("/nonexistent/config.json"), std::string::npos) << missing.output;
}

}  // namespace
}  // namespace expertmesh
