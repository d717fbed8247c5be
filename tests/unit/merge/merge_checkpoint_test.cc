// The offline merge (MergeCheckpoint, what expertmesh-merge runs) against files: the written
// checkpoint equals the in-memory TensorMerger bit for bit (sharded output, FP8 base), carries the
// base's config and tokenizer, reports what it did, refuses to overwrite, and leaves nothing behind
// when it fails or is cancelled. Also on the bundled prose/code models.
#include "engine/merge/checkpoint_merge.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "engine/format/checkpoint.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/merge/merge_test_util.h"

namespace expertmesh {
namespace {

using testing::TempDir;
using testing::TestTensor;
using testing::TinyConfigJson;
using testing::WriteCheckpoint;

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every output tensor of `merger` is stored in `out_dir` with exactly the bytes Merge returns.
void ExpectCheckpointEqualsInMemoryMerge(const TensorMerger& merger, const std::filesystem::path& out_dir) {
  auto written = Checkpoint::Open(out_dir);
  ASSERT_TRUE(written.ok()) << written.status();
  std::vector<std::string> expected_names;
  for (const OutputTensorSpec& spec : merger.outputs()) expected_names.push_back(spec.name);
  EXPECT_EQ((*written)->TensorNames(), expected_names);
  for (const OutputTensorSpec& spec : merger.outputs()) {
    auto in_memory = merger.Merge(spec.name);
    ASSERT_TRUE(in_memory.ok()) << in_memory.status();
    const TensorLocation* location = (*written)->Find(spec.name);
    ASSERT_NE(location, nullptr);
    EXPECT_EQ(location->dtype, in_memory->dtype) << spec.name;
    EXPECT_EQ(location->shape, in_memory->shape) << spec.name;
    auto raw = (*written)->RawBytes(spec.name);
    ASSERT_TRUE(raw.ok());
    ASSERT_EQ(raw->size(), in_memory->bytes.size()) << spec.name;
    EXPECT_EQ(0, std::memcmp(raw->data(), in_memory->bytes.data(), raw->size())) << spec.name;
  }
}

std::vector<TestTensor> SmallParent(float scale, bool fp8) {
  std::vector<TestTensor> tensors;
  for (int layer = 1; layer <= 2; ++layer) {
    for (int expert = 0; expert < 3; ++expert) {
      const std::string prefix = "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(expert);
      std::vector<float> values(8);
      for (int j = 0; j < 8; ++j) values[j] = scale * static_cast<float>(layer * 10 + expert + j) / 8.0f;
      if (fp8) {
        tensors.push_back({prefix + ".down_proj.weight", DType::kF8E4M3, {2, 4}, values});
        tensors.push_back({prefix + ".down_proj.weight_scale_inv", DType::kF32, {1, 2}, {0.5f, 0.25f}});
      } else {
        tensors.push_back({prefix + ".down_proj.weight", DType::kBF16, {2, 4}, values});
      }
    }
    tensors.push_back({"model.layers." + std::to_string(layer) + ".mlp.gate.e_score_correction_bias", DType::kF32,
                       {3}, {0.1f * scale, 0.2f, 0.3f}});
  }
  tensors.push_back({"model.embed_tokens.weight", DType::kBF16, {4, 2}, {1, 2, 3, 4, 5, 6, 7, scale}});
  return tensors;
}

class MergeCheckpointTest : public ::testing::Test {
 protected:
  Recipe MakeRecipe(const std::string& base_dir, const std::string& other_dir) {
    Recipe recipe;
    recipe.name = "small";
    recipe.parents = {{"base", dir_.path() / base_dir, 0.3}, {"other", dir_.path() / other_dir, 0.7}};
    recipe.base_parent = "base";
    return recipe;
  }
  absl::StatusOr<std::unique_ptr<TensorMerger>> InMemory(const Recipe& recipe) {
    auto parents = OpenParents(recipe);
    if (!parents.ok()) return parents.status();
    parents_ = std::move(parents).value();
    std::vector<const Checkpoint*> borrowed;
    for (const auto& parent : parents_) borrowed.push_back(parent.get());
    return TensorMerger::Create(recipe, borrowed);
  }
  TempDir dir_;
  std::vector<std::unique_ptr<Checkpoint>> parents_;
};

TEST_F(MergeCheckpointTest, ShardedOutputEqualsInMemoryMergeBitForBit) {
  WriteCheckpoint(dir_.path() / "p", SmallParent(1.0f, false));
  WriteCheckpoint(dir_.path() / "q", SmallParent(-2.0f, false));
  testing::WriteTextFile(dir_.path() / "p" / "tokenizer.json", "{\"tokenizer\": true}");
  Recipe recipe = MakeRecipe("p", "q");
  recipe.merge_globs = {"model.layers.*.mlp.experts.*", "model.layers.2.*"};
  const std::filesystem::path out = dir_.path() / "merged";
  CheckpointMergeOptions options;
  options.max_shard_bytes = 40;  // several shards
  std::vector<MergeProgress> seen;
  options.progress = [&](const MergeProgress& p) { seen.push_back(p); };
  auto report = MergeCheckpoint(recipe, out, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GT(report->shard_files.size(), 2u);
  EXPECT_EQ(report->merged, 7);  // 6 experts + the layer-2 bias
  EXPECT_EQ(report->copied, 2);  // layer-1 bias, embeddings
  EXPECT_EQ(report->kept_by_delta, 0);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().tensors_done, 9);
  EXPECT_EQ(seen.back().bytes_done, seen.back().bytes_total);

  auto merger = InMemory(recipe);
  ASSERT_TRUE(merger.ok()) << merger.status();
  ExpectCheckpointEqualsInMemoryMerge(**merger, out);
  EXPECT_EQ(ReadAll(out / "tokenizer.json"), "{\"tokenizer\": true}");
  EXPECT_EQ(nlohmann::json::parse(ReadAll(out / "config.json")),
            nlohmann::json::parse(ReadAll(dir_.path() / "p" / "config.json")));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "merged.partial"));

  const nlohmann::json written = nlohmann::json::parse(ReadAll(out / "merge_report.json"));
  EXPECT_EQ(written["counts"]["merged"], 7);
  EXPECT_EQ(written["recipe"]["base"], "base");
  EXPECT_EQ(written["tensors"].size(), 9u);
  EXPECT_EQ(written["tensors"][0]["name"], "model.embed_tokens.weight");
  EXPECT_EQ(written["tensors"][0]["origin"], "copied");
  EXPECT_TRUE(written["tensors"][0]["relative_distance"].is_null());
}

TEST_F(MergeCheckpointTest, Fp8BaseKeepsQuantizationForTheTensorsItCopies) {
  WriteCheckpoint(dir_.path() / "f", SmallParent(1.0f, true), TinyConfigJson(256, /*fp8_block=*/2));
  WriteCheckpoint(dir_.path() / "q", SmallParent(-2.0f, false));
  Recipe recipe = MakeRecipe("f", "q");
  recipe.merge_globs = {"model.layers.1.mlp.experts.*"};
  const std::filesystem::path out = dir_.path() / "merged";
  auto report = MergeCheckpoint(recipe, out);
  ASSERT_TRUE(report.ok()) << report.status();
  auto merger = InMemory(recipe);
  ASSERT_TRUE(merger.ok());
  ExpectCheckpointEqualsInMemoryMerge(**merger, out);
  const nlohmann::json config = nlohmann::json::parse(ReadAll(out / "config.json"));
  EXPECT_TRUE(config.contains("quantization_config"));  // layer-2 experts are still FP8
  auto written = Checkpoint::Open(out);
  ASSERT_TRUE(written.ok());
  EXPECT_FALSE((*written)->Contains("model.layers.1.mlp.experts.0.down_proj.weight_scale_inv"));
  EXPECT_TRUE((*written)->Contains("model.layers.2.mlp.experts.0.down_proj.weight_scale_inv"));
  // Both kinds load as float32: the merged bf16 one and the copied, still quantized one.
  EXPECT_TRUE((*written)->LoadFloat("model.layers.1.mlp.experts.0.down_proj.weight").ok());
  EXPECT_TRUE((*written)->LoadFloat("model.layers.2.mlp.experts.0.down_proj.weight").ok());

  // Merging every tensor leaves nothing FP8: quantization_config is dropped.
  recipe.merge_globs = {"*"};
  ASSERT_TRUE(MergeCheckpoint(recipe, dir_.path() / "all").ok());
  EXPECT_FALSE(nlohmann::json::parse(ReadAll(dir_.path() / "all" / "config.json")).contains("quantization_config"));
}

TEST_F(MergeCheckpointTest, RefusesToOverwriteAndLeavesNothingOnFailureOrCancel) {
  WriteCheckpoint(dir_.path() / "p", SmallParent(1.0f, false));
  WriteCheckpoint(dir_.path() / "q", SmallParent(-2.0f, false));
  const Recipe recipe = MakeRecipe("p", "q");

  std::filesystem::create_directories(dir_.path() / "busy");
  testing::WriteTextFile(dir_.path() / "busy" / "keep.txt", "x");
  EXPECT_EQ(MergeCheckpoint(recipe, dir_.path() / "busy").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "busy" / "keep.txt"));

  Recipe no_match = recipe;
  no_match.merge_globs = {"lm_head.weight"};
  EXPECT_EQ(MergeCheckpoint(no_match, dir_.path() / "bad").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "bad"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "bad.partial"));

  Recipe missing_parent = recipe;
  missing_parent.parents[1].checkpoint = dir_.path() / "nowhere";
  auto missing = MergeCheckpoint(missing_parent, dir_.path() / "bad");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("parent 'other'"), std::string::npos) << missing.status();

  std::stop_source stop;
  CheckpointMergeOptions options;
  options.stop = stop.get_token();
  options.progress = [&](const MergeProgress& p) {
    if (p.tensors_done == 3) stop.request_stop();
  };
  EXPECT_EQ(MergeCheckpoint(recipe, dir_.path() / "cancelled", options).status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "cancelled"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "cancelled.partial"));

  std::filesystem::create_directories(dir_.path() / "empty");  // an empty directory is fine
  EXPECT_TRUE(MergeCheckpoint(recipe, dir_.path() / "empty").ok());
}

// The bundled family: a Chimera-style blend of the prose and code parents' routed experts.
TEST(BundledModelsMergeTest, ProseCodeExpertBlendMatchesIndependentArithmetic) {
  const char* source = std::getenv("EXPERTMESH_SOURCE_DIR");
  const std::filesystem::path models = std::filesystem::path(source ? source : ".") / "models";
  TempDir dir;
  Recipe recipe;
  recipe.name = "prose-code-0.3";
  recipe.parents = {{"prose", models / "prose", 0.7}, {"code", models / "code", 0.3}};
  recipe.base_parent = "prose";
  const std::filesystem::path out = dir.path() / "blend";
  auto report = MergeCheckpoint(recipe, out);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->merged, 3 * 8 * 3);  // 3 MoE layers x 8 experts x gate/up/down
  EXPECT_EQ(report->kept_by_delta, 0);
  EXPECT_EQ(report->copied, 129 - 72);  // 129 tensors in all
  EXPECT_EQ(ReadAll(out / "tokenizer.json"), ReadAll(models / "prose" / "tokenizer.json"));

  auto prose = Checkpoint::Open(models / "prose");
  auto code = Checkpoint::Open(models / "code");
  auto blend = Checkpoint::Open(out);
  ASSERT_TRUE(prose.ok() && code.ok() && blend.ok());
  // Independent arithmetic in double, rounded once to bf16; the engine computes in float32, so a
  // value may land on the neighbouring bf16 only when the double result is (nearly) a tie.
  for (const std::string name : {"model.layers.1.mlp.experts.0.gate_proj.weight",
                                 "model.layers.3.mlp.experts.7.down_proj.weight"}) {
    auto p = (*prose)->LoadFloat(name);
    auto c = (*code)->LoadFloat(name);
    auto b = (*blend)->LoadFloat(name);
    ASSERT_TRUE(p.ok() && c.ok() && b.ok());
    int64_t off_by_one_ulp = 0;
    for (int64_t j = 0; j < p->size(); ++j) {
      const double exact = 0.7 * p->data()[j] + 0.3 * c->data()[j];
      const float rounded = BFloat16ToFloat(FloatToBFloat16(static_cast<float>(exact)));
      if (b->data()[j] != rounded) {
        ++off_by_one_ulp;
        EXPECT_LE(std::fabs(b->data()[j] - exact), std::fabs(rounded - exact) * 1.01 + 1e-30) << name << " " << j;
      }
    }
    EXPECT_LT(off_by_one_ulp, p->size() / 100) << name;
  }
  // Non-expert tensors are the prose parent's, byte for byte.
  for (const std::string name : {"model.embed_tokens.weight", "model.layers.2.self_attn.kv_b_proj.weight",
                                 "model.layers.2.mlp.shared_experts.up_proj.weight"}) {
    auto original = (*prose)->RawBytes(name);
    auto copied = (*blend)->RawBytes(name);
    ASSERT_TRUE(original.ok() && copied.ok()) << name;
    ASSERT_EQ(original->size(), copied->size());
    EXPECT_EQ(0, std::memcmp(original->data(), copied->data(), copied->size())) << name;
  }
}

}  // namespace
}  // namespace expertmesh
