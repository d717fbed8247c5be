// An expert shard loads only its experts' bytes: on a copy of the sharded v2_lite_tiny fixture
// from which every shard file without a wanted tensor is deleted (or replaced by garbage),
// LoadWeights with an expert filter succeeds and its experts compute exactly what the full
// checkpoint's do.
#include <fstream>
#include <random>
#include <set>

#include "engine/model/weight_loader.h"
#include "gtest/gtest.h"
#include "tests/unit/format/safetensors_test_util.h"

namespace expertmesh {
namespace {

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("EXPERTMESH_SOURCE_DIR");
  return dir != nullptr ? std::filesystem::path(dir) : std::filesystem::current_path();
}

class ExpertShardLoadingTest : public testing::TempDirTest {};

TEST_F(ExpertShardLoadingTest, ShardFilesWithoutWantedExpertsAreNeverRead) {
  const std::filesystem::path fixture = SourceDir() / "tests/fixtures/v2_lite_tiny";
  LoadOptions options;
  options.load_non_expert_weights = false;
  options.expert_filter = [](int64_t layer, int32_t expert) { return layer == 2 && expert >= 4 && expert < 8; };
  const auto filter = CheckpointNameFilter(options);

  std::ifstream in(fixture / "model.safetensors.index.json");
  const nlohmann::json index = nlohmann::json::parse(in);
  std::set<std::string> needed, all;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    all.insert(it.value().get<std::string>());
    if (filter(it.key())) needed.insert(it.value().get<std::string>());
  }
  ASSERT_FALSE(needed.empty());
  ASSERT_LT(needed.size(), all.size()) << "the fixture must have shards this filter does not need";
  std::filesystem::copy_file(fixture / "config.json", directory_ / "config.json");
  std::filesystem::copy_file(fixture / "model.safetensors.index.json", directory_ / "model.safetensors.index.json");
  bool garbage_written = false;
  for (const std::string& shard : all) {
    if (needed.contains(shard)) {
      std::filesystem::copy_file(fixture / shard, directory_ / shard);
    } else if (!garbage_written) {
      testing::WriteFile(directory_ / shard, "not a safetensors file");  // would fail if opened
      garbage_written = true;
    }  // the other unneeded shards are absent
  }

  auto shard_checkpoint = Checkpoint::Open(directory_, filter);
  ASSERT_TRUE(shard_checkpoint.ok()) << shard_checkpoint.status();
  auto shard = LoadWeights(**shard_checkpoint, options);
  ASSERT_TRUE(shard.ok()) << shard.status();
  ASSERT_NE(shard->routed_experts, nullptr);
  EXPECT_EQ(shard->routed_experts->num_experts(), 4);
  EXPECT_TRUE(shard->routed_experts->HasExpert(2, 5));
  EXPECT_FALSE(shard->routed_experts->HasExpert(2, 3));
  EXPECT_FALSE(shard->routed_experts->HasExpert(1, 5));
  EXPECT_FALSE(Checkpoint::Open(directory_).ok()) << "without the filter the missing shards must be noticed";

  // Same results as the experts of the complete checkpoint.
  LoadOptions everything;
  auto full_checkpoint = Checkpoint::Open(fixture);
  ASSERT_TRUE(full_checkpoint.ok()) << full_checkpoint.status();
  auto full = LoadWeights(**full_checkpoint, everything);
  ASSERT_TRUE(full.ok()) << full.status();
  const ModelConfig& config = (*full_checkpoint)->config();
  const int64_t tokens = 3, top_k = 2;
  std::vector<float> activations(tokens * config.hidden_size);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (float& v : activations) v = normal(rng);
  const std::vector<int32_t> ids = {4, 7, 5, 6, 7, 4};
  const std::vector<float> gates = {0.25f, 0.75f, 1.0f, 0.5f, 0.125f, 2.0f};
  RoutedExpertBatch batch{2, tokens, config.hidden_size, top_k, activations, ids, gates};
  std::vector<float> from_shard(activations.size(), 0.0f), from_full(activations.size(), 0.0f);
  ASSERT_TRUE(shard->routed_experts->Compute(batch, from_shard).ok());
  ASSERT_TRUE(full->routed_experts->Compute(batch, from_full).ok());
  EXPECT_EQ(from_shard, from_full);
  EXPECT_NE(from_full, std::vector<float>(activations.size(), 0.0f));
}

}  // namespace
}  // namespace expertmesh
