// Checkpoint on real files written per test: single-file and sharded layouts, index errors (missing
// shards, tensors a shard lacks, path traversal), the name filter (unneeded shards never opened),
// float32 loads of every dtype, FP8 block dequantization and its failure modes, NaN/inf, shape
// checks and zero-copy raw views. Each failure expects its code and a message naming file/tensor.
#include "engine/format/checkpoint.h"

#include <cmath>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/unit/format/safetensors_test_util.h"

namespace expertmesh {
namespace {

using testing::BF16Tensor;
using testing::F32Tensor;
using testing::FileBytes;
using testing::Iota;
using testing::TensorBytes;
using testing::WriteFile;

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("EXPERTMESH_SOURCE_DIR");
  return dir != nullptr ? std::filesystem::path(dir) : std::filesystem::current_path();
}

// v3_tiny's config.json, optionally with FP8 block quantization of the given block size.
nlohmann::json TinyConfig(std::optional<std::pair<int, int>> fp8_block = std::nullopt) {
  std::ifstream in(SourceDir() / "tests/fixtures/v3_tiny/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  if (fp8_block) {
    config["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"},
                                     {"weight_block_size", {fp8_block->first, fp8_block->second}}};
  }
  return config;
}

TensorBytes Fp8Tensor(std::string name, std::vector<int64_t> shape, std::vector<uint8_t> codes) {
  return TensorBytes{std::move(name), "F8_E4M3", std::move(shape), std::move(codes)};
}

class CheckpointTest : public testing::TempDirTest {
 protected:
  void WriteConfig(const nlohmann::json& config) { WriteFile(directory_ / "config.json", config.dump()); }
  void WriteSingle(const std::vector<TensorBytes>& tensors, const nlohmann::json& config = TinyConfig()) {
    WriteConfig(config);
    WriteFile(directory_ / "model.safetensors", FileBytes(tensors));
  }
  // Shards named shard-<i>.safetensors; the index maps every tensor to its shard.
  void WriteSharded(const std::vector<std::vector<TensorBytes>>& shards) {
    WriteConfig(TinyConfig());
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name = "shard-" + std::to_string(i) + ".safetensors";
      WriteFile(directory_ / name, FileBytes(shards[i]));
      for (const TensorBytes& t : shards[i]) index["weight_map"][t.name] = name;
    }
    WriteIndex(index);
  }
  void WriteIndex(const nlohmann::json& index) { WriteFile(directory_ / "model.safetensors.index.json", index.dump()); }

  template <typename T>
  void ExpectError(const absl::StatusOr<T>& result, absl::StatusCode code, const std::vector<std::string>& mentions) {
    ASSERT_FALSE(result.ok()) << "expected an error";
    EXPECT_EQ(result.status().code(), code) << result.status();
    for (const std::string& text : mentions) {
      EXPECT_NE(result.status().message().find(text), std::string::npos)
          << "message does not mention '" << text << "': " << result.status();
    }
  }
  std::unique_ptr<Checkpoint> OpenOrDie(std::function<bool(const std::string&)> filter = nullptr) {
    auto checkpoint = Checkpoint::Open(directory_, std::move(filter));
    EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
    return checkpoint.ok() ? *std::move(checkpoint) : nullptr;
  }
  std::string File(const std::string& name) const { return (directory_ / name).string(); }
};

TEST_F(CheckpointTest, SingleFileLoadsEveryDtypeAsFloat) {
  WriteSingle({F32Tensor("a", {2, 3}, Iota(6)), BF16Tensor("b", {3}, {1.5f, -2.0f, 0.0078125f}),
               TensorBytes{"c", "F16", {2}, {0x00, 0x3c, 0x00, 0xc0}}});
  auto checkpoint = OpenOrDie();
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_EQ(checkpoint->config().model_type, "deepseek_v3");
  EXPECT_EQ(checkpoint->TensorNames(), (std::vector<std::string>{"a", "b", "c"}));
  auto a = checkpoint->LoadFloat("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::vector<float>(a->values().begin(), a->values().end()), Iota(6));
  auto b = checkpoint->LoadFloat("b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(std::vector<float>(b->values().begin(), b->values().end()), (std::vector<float>{1.5f, -2.0f, 0.0078125f}));
  auto c = checkpoint->LoadFloat("c");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(std::vector<float>(c->values().begin(), c->values().end()), (std::vector<float>{1.0f, -2.0f}));
  const TensorLocation* location = checkpoint->Find("b");
  ASSERT_NE(location, nullptr);
  EXPECT_EQ(location->dtype, DType::kBF16);
  EXPECT_EQ(location->file, directory_ / "model.safetensors");
  EXPECT_EQ(location->byte_size, 6u);
}

TEST_F(CheckpointTest, RawBytesIsAZeroCopyViewOfTheStoredBytes) {
  const TensorBytes b = BF16Tensor("b", {3}, {1.5f, -2.0f, 3.0f});
  WriteSingle({F32Tensor("a", {2}, Iota(2)), b});
  auto checkpoint = OpenOrDie();
  auto first = checkpoint->RawBytes("b");
  auto second = checkpoint->RawBytes("b");
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->data(), second->data());  // the same mapped memory, not copies
  ASSERT_EQ(first->size(), b.bytes.size());
  EXPECT_EQ(std::memcmp(first->data(), b.bytes.data(), b.bytes.size()), 0);
  ExpectError(checkpoint->RawBytes("zzz"), absl::StatusCode::kNotFound, {"zzz"});
}

TEST_F(CheckpointTest, MissingTensorIsNotFoundByName) {
  WriteSingle({F32Tensor("a", {2}, Iota(2))});
  auto checkpoint = OpenOrDie();
  EXPECT_FALSE(checkpoint->Contains("model.norm.weight"));
  EXPECT_EQ(checkpoint->Find("model.norm.weight"), nullptr);
  ExpectError(checkpoint->LoadFloat("model.norm.weight"), absl::StatusCode::kNotFound,
              {"model.norm.weight", directory_.string()});
}

TEST_F(CheckpointTest, ExpectedShapeMismatchNamesTensorAndBothShapes) {
  WriteSingle({F32Tensor("a", {2, 3}, Iota(6))});
  auto checkpoint = OpenOrDie();
  const std::vector<int64_t> right = {2, 3}, wrong = {3, 2};
  EXPECT_TRUE(checkpoint->LoadFloat("a", &right).ok());
  ExpectError(checkpoint->LoadFloat("a", &wrong), absl::StatusCode::kInvalidArgument,
              {"'a'", "[2, 3]", "[3, 2]", File("model.safetensors")});
}

TEST_F(CheckpointTest, MissingDirectoryConfigOrWeights) {
  ExpectError(Checkpoint::Open(directory_ / "nope"), absl::StatusCode::kNotFound, {"nope"});
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kNotFound, {"config.json"});
  WriteConfig(TinyConfig());
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kNotFound, {"model.safetensors"});
  nlohmann::json bad = TinyConfig();
  bad["scoring_func"] = "foo";
  WriteConfig(bad);
  WriteFile(directory_ / "model.safetensors", FileBytes({F32Tensor("a", {1}, {1.0f})}));
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kInvalidArgument, {"config.json", "scoring_func"});
}

TEST_F(CheckpointTest, MalformedSafetensorsFailsOpenNamingTheFile) {
  WriteConfig(TinyConfig());
  std::string bytes = FileBytes({F32Tensor("a", {4}, Iota(4))});
  bytes.resize(bytes.size() - 3);
  WriteFile(directory_ / "model.safetensors", bytes);
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kDataLoss, {File("model.safetensors"), "'a'"});
}

TEST_F(CheckpointTest, UnsupportedDtypeIsAnErrorOnlyForWantedTensors) {
  WriteSingle({F32Tensor("a", {2}, Iota(2)), TensorBytes{"step", "I64", {1}, std::vector<uint8_t>(8, 0)}});
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kInvalidArgument,
              {File("model.safetensors"), "'step'", "I64"});
  auto filtered = OpenOrDie([](const std::string& name) { return name != "step"; });
  ASSERT_NE(filtered, nullptr);
  EXPECT_TRUE(filtered->Contains("a"));
  EXPECT_FALSE(filtered->Contains("step"));
}

TEST_F(CheckpointTest, NonFiniteValuesAreDataLoss) {
  std::vector<float> values = Iota(4);
  values[2] = std::nanf("");
  std::vector<float> infinite = Iota(3);
  infinite[1] = INFINITY;
  WriteSingle({F32Tensor("nan", {4}, values), BF16Tensor("inf", {3}, infinite), F32Tensor("ok", {1}, {1.0f})});
  auto checkpoint = OpenOrDie();
  ExpectError(checkpoint->LoadFloat("nan"), absl::StatusCode::kDataLoss,
              {File("model.safetensors"), "'nan'", "element 2", "NaN"});
  ExpectError(checkpoint->LoadFloat("inf"), absl::StatusCode::kDataLoss,
              {File("model.safetensors"), "'inf'", "element 1", "infinite"});
  EXPECT_TRUE(checkpoint->LoadFloat("ok").ok());
}

TEST_F(CheckpointTest, ShardedCheckpointLoadsFromEveryShard) {
  WriteSharded({{F32Tensor("model.layers.0.a", {2}, Iota(2)), F32Tensor("model.layers.0.b", {3}, Iota(3, 5.0f))},
                {F32Tensor("model.layers.1.a", {2}, Iota(2, -1.0f))}});
  auto checkpoint = OpenOrDie();
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_EQ(checkpoint->TensorNames().size(), 3u);
  EXPECT_EQ(checkpoint->Find("model.layers.1.a")->file, directory_ / "shard-1.safetensors");
  auto b = checkpoint->LoadFloat("model.layers.0.b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(std::vector<float>(b->values().begin(), b->values().end()), Iota(3, 5.0f));
  auto a1 = checkpoint->LoadFloat("model.layers.1.a");
  ASSERT_TRUE(a1.ok()) << a1.status();
  EXPECT_EQ(a1->values()[0], -1.0f);
}

TEST_F(CheckpointTest, IndexNamesMissingShardFile) {
  WriteSharded({{F32Tensor("x", {2}, Iota(2))}, {F32Tensor("y", {2}, Iota(2))}});
  std::filesystem::remove(directory_ / "shard-1.safetensors");
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kNotFound,
              {"'y'", "shard-1.safetensors", "model.safetensors.index.json"});
}

TEST_F(CheckpointTest, IndexNamesTensorTheShardLacks) {
  WriteSharded({{F32Tensor("x", {2}, Iota(2))}, {F32Tensor("y", {2}, Iota(2))}});
  nlohmann::json index = {{"weight_map", {{"x", "shard-0.safetensors"}, {"y", "shard-1.safetensors"},
                                          {"ghost", "shard-1.safetensors"}}}};
  WriteIndex(index);
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kDataLoss, {"'ghost'", File("shard-1.safetensors")});
}

TEST_F(CheckpointTest, IndexShardNamesCannotLeaveTheDirectory) {
  WriteSharded({{F32Tensor("x", {2}, Iota(2))}});
  std::filesystem::create_directories(directory_ / "sub");
  WriteFile(directory_ / "sub/evil.safetensors", FileBytes({F32Tensor("x", {2}, Iota(2))}));
  for (const std::string shard : {"../shard-0.safetensors", "/etc/passwd", "sub/evil.safetensors", "..", ""}) {
    WriteIndex({{"weight_map", {{"x", shard}}}});
    ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kDataLoss, {"'x'", "not a plain file name"});
  }
}

TEST_F(CheckpointTest, MalformedIndex) {
  WriteSharded({{F32Tensor("x", {2}, Iota(2))}});
  WriteFile(directory_ / "model.safetensors.index.json", "{\"weight_map\": {\"x\": ");
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kDataLoss, {"model.safetensors.index.json", "JSON"});
  WriteIndex({{"metadata", {}}});
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kDataLoss, {"weight_map"});
  WriteIndex({{"weight_map", {{"x", 3}}}});
  ExpectError(Checkpoint::Open(directory_), absl::StatusCode::kDataLoss, {"'x'"});
}

// An expert shard's filter never touches the other shards: they may be absent or garbage.
TEST_F(CheckpointTest, NameFilterNeverOpensShardsWithoutWantedTensors) {
  WriteSharded({{F32Tensor("model.layers.1.mlp.experts.0.w", {2}, Iota(2))},
                {F32Tensor("model.layers.1.mlp.experts.1.w", {2}, Iota(2, 3.0f))},
                {F32Tensor("model.layers.1.mlp.experts.2.w", {2}, Iota(2))}});
  std::filesystem::remove(directory_ / "shard-0.safetensors");
  WriteFile(directory_ / "shard-2.safetensors", "this is not a safetensors file");
  auto wanted = [](const std::string& name) { return name.find(".experts.1.") != std::string::npos; };
  auto checkpoint = OpenOrDie(wanted);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_EQ(checkpoint->TensorNames(), (std::vector<std::string>{"model.layers.1.mlp.experts.1.w"}));
  auto loaded = checkpoint->LoadFloat("model.layers.1.mlp.experts.1.w");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->values()[1], 3.25f);
  // Without the filter the broken shards are found.
  EXPECT_FALSE(Checkpoint::Open(directory_).ok());
}

TEST_F(CheckpointTest, Fp8WeightsAreDequantizedPerBlock) {
  // 3 x 5 weight in 2 x 3 blocks: scales [2, 2].
  std::vector<uint8_t> codes(15);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(0x30 + i);  // finite E4M3 codes
  const std::vector<float> scales = {0.5f, 2.0f, 4.0f, 0.125f};
  WriteSingle({Fp8Tensor("w", {3, 5}, codes), F32Tensor("w_scale_inv", {2, 2}, scales)}, TinyConfig({{2, 3}}));
  auto checkpoint = OpenOrDie([](const std::string& name) { return name == "w"; });  // scale comes along
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_TRUE(checkpoint->Contains("w_scale_inv"));
  auto w = checkpoint->LoadFloat("w");
  ASSERT_TRUE(w.ok()) << w.status();
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 5; ++c) {
      const float expected = Float8E4M3ToFloat(codes[r * 5 + c]) * scales[(r / 2) * 2 + c / 3];
      EXPECT_EQ(w->data()[r * 5 + c], expected) << r << "," << c;
    }
  }
  auto raw = checkpoint->RawBytes("w");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->size(), 15u);  // raw view keeps the stored FP8 bytes
}

TEST_F(CheckpointTest, Fp8DefaultBlocksAre128) {
  std::vector<uint8_t> codes(130 * 200, 0x38);  // 1.0
  WriteSingle({Fp8Tensor("w", {130, 200}, codes), F32Tensor("w_scale_inv", {2, 2}, {1.0f, 2.0f, 3.0f, 4.0f})},
              TinyConfig({{128, 128}}));
  auto w = OpenOrDie()->LoadFloat("w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->data()[0], 1.0f);
  EXPECT_EQ(w->data()[127 * 200 + 128], 2.0f);
  EXPECT_EQ(w->data()[128 * 200 + 127], 3.0f);
  EXPECT_EQ(w->data()[129 * 200 + 199], 4.0f);
}

TEST_F(CheckpointTest, Fp8MissingScale) {
  WriteSingle({Fp8Tensor("w", {2, 2}, {0x38, 0x38, 0x38, 0x38})}, TinyConfig({{128, 128}}));
  ExpectError(OpenOrDie()->LoadFloat("w"), absl::StatusCode::kNotFound, {"'w'", "w_scale_inv", File("model.safetensors")});
}

TEST_F(CheckpointTest, Fp8WrongScaleShape) {
  WriteSingle({Fp8Tensor("w", {3, 5}, std::vector<uint8_t>(15, 0x38)), F32Tensor("w_scale_inv", {1, 1}, {1.0f})},
              TinyConfig({{2, 3}}));
  ExpectError(OpenOrDie()->LoadFloat("w"), absl::StatusCode::kInvalidArgument,
              {"'w_scale_inv'", "[1, 1]", "[2, 2]", File("model.safetensors")});
}

TEST_F(CheckpointTest, Fp8NeedsQuantizationConfig) {
  WriteSingle({Fp8Tensor("w", {1, 1}, {0x38}), F32Tensor("w_scale_inv", {1, 1}, {1.0f})});
  ExpectError(OpenOrDie()->LoadFloat("w"), absl::StatusCode::kInvalidArgument, {"'w'", "quantization_config"});
}

TEST_F(CheckpointTest, Fp8NonFiniteWeightsOrScales) {
  WriteSingle({Fp8Tensor("nan_weight", {1, 2}, {0x38, 0x7f}), F32Tensor("nan_weight_scale_inv", {1, 1}, {1.0f}),
               Fp8Tensor("inf_scale", {1, 2}, {0x38, 0x38}), F32Tensor("inf_scale_scale_inv", {1, 1}, {INFINITY}),
               Fp8Tensor("negative_scale", {1, 1}, {0x38}), F32Tensor("negative_scale_scale_inv", {1, 1}, {-1.0f}),
               Fp8Tensor("overflow", {1, 1}, {0x7e}), F32Tensor("overflow_scale_inv", {1, 1}, {3e38f})},
              TinyConfig({{128, 128}}));
  auto checkpoint = OpenOrDie();
  ExpectError(checkpoint->LoadFloat("nan_weight"), absl::StatusCode::kDataLoss,
              {"'nan_weight'", "NaN", File("model.safetensors")});
  ExpectError(checkpoint->LoadFloat("inf_scale"), absl::StatusCode::kDataLoss, {"'inf_scale_scale_inv'", "infinite"});
  ExpectError(checkpoint->LoadFloat("negative_scale"), absl::StatusCode::kDataLoss, {"'negative_scale_scale_inv'"});
  ExpectError(checkpoint->LoadFloat("overflow"), absl::StatusCode::kDataLoss, {"'overflow'", "dequantized"});
}

}  // namespace
}  // namespace expertmesh
