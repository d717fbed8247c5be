// ShardedSafetensorsWriter: shard planning, the on-disk format (8-byte aligned JSON headers,
// contiguous data, index file) checked byte by byte, a round trip through the engine's Checkpoint
// reader for bf16/f32/f16/fp8 tensors, and misuse errors.
#include "engine/merge/safetensors_writer.h"

#include <fstream>
#include <sstream>

#include "engine/format/checkpoint.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/merge/merge_test_util.h"

namespace expertmesh {
namespace {

using testing::EncodeValues;
using testing::TempDir;
using testing::TestTensor;

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<TestTensor> MixedTensors() {
  return {
      {"b.bf16", DType::kBF16, {2, 3}, {1.0f, -2.5f, 0.15625f, 3e5f, -0.0f, 7.0f}},
      {"a.f32", DType::kF32, {3}, {0.1f, -1e-20f, 12345.678f}},
      {"c.fp8", DType::kF8E4M3, {2, 2}, {1.0f, -0.5f, 448.0f, 0.015625f}},
      {"c.fp8_scale_inv", DType::kF32, {1, 1}, {0.25f}},
      {"d.f16", DType::kF16, {1, 2}, {65504.0f, -0.0009765625f}},
      {"e.scalar", DType::kF32, {}, {42.0f}},
  };
}

TEST(SafetensorsWriterTest, SplitsIntoShardsWithAlignedHeadersAndContiguousData) {
  TempDir dir;
  std::vector<TensorSpec> specs;
  for (const TestTensor& tensor : MixedTensors()) specs.push_back({tensor.name, tensor.dtype, tensor.shape});
  // Sizes 12, 12, 4, 4, 4, 4 with a 16-byte limit: [b], [a, c], [c_scale, d, e] (an FP8 weight and
  // its scale may land in different shards).
  auto writer = ShardedSafetensorsWriter::Create(dir.path(), specs, /*max_shard_bytes=*/16);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::vector<std::string> expected_files = {"model-00001-of-00003.safetensors",
                                                   "model-00002-of-00003.safetensors",
                                                   "model-00003-of-00003.safetensors"};
  EXPECT_EQ((*writer)->shard_file_names(), expected_files);
  EXPECT_EQ((*writer)->total_tensor_bytes(), 12u + 12 + 4 + 4 + 4 + 4);
  // Written in reverse order on purpose.
  std::vector<TestTensor> tensors = MixedTensors();
  for (size_t i = tensors.size(); i-- > 0;) {
    ASSERT_TRUE((*writer)->Write(tensors[i].name, EncodeValues(tensors[i].dtype, tensors[i].values)).ok());
  }
  ASSERT_TRUE((*writer)->Finish().ok());

  // Shard 1 holds only b.bf16, byte-exact.
  const std::string shard = ReadAll(dir.path() / expected_files[0]);
  ASSERT_GE(shard.size(), 8u);
  uint64_t header_length = 0;
  for (int i = 0; i < 8; ++i) header_length |= static_cast<uint64_t>(static_cast<uint8_t>(shard[i])) << (8 * i);
  EXPECT_EQ(header_length % 8, 0u);
  EXPECT_EQ(shard.size(), 8 + header_length + 12);
  const nlohmann::json header = nlohmann::json::parse(shard.substr(8, header_length));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["b.bf16"]["dtype"], "BF16");
  EXPECT_EQ(header["b.bf16"]["shape"], nlohmann::json::array({2, 3}));
  EXPECT_EQ(header["b.bf16"]["data_offsets"], nlohmann::json::array({0, 12}));
  const std::vector<std::byte> expected = EncodeValues(DType::kBF16, tensors[0].values);
  EXPECT_EQ(0, std::memcmp(shard.data() + 8 + header_length, expected.data(), expected.size()));

  // Shard 3: data offsets are contiguous from 0 to the end of the file.
  const std::string third = ReadAll(dir.path() / expected_files[2]);
  uint64_t third_length = 0;
  for (int i = 0; i < 8; ++i) third_length |= static_cast<uint64_t>(static_cast<uint8_t>(third[i])) << (8 * i);
  EXPECT_EQ(third_length % 8, 0u);
  const nlohmann::json third_header = nlohmann::json::parse(third.substr(8, third_length));
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : third_header.items()) {
    if (name != "__metadata__") ranges.push_back({entry["data_offsets"][0], entry["data_offsets"][1]});
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t position = 0;
  for (const auto& [begin, end] : ranges) {
    EXPECT_EQ(begin, position);
    position = end;
  }
  EXPECT_EQ(third.size(), 8 + third_length + position);

  const nlohmann::json index = nlohmann::json::parse(ReadAll(dir.path() / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 40);
  EXPECT_EQ(index["weight_map"]["b.bf16"], expected_files[0]);
  EXPECT_EQ(index["weight_map"]["a.f32"], expected_files[1]);
  EXPECT_EQ(index["weight_map"]["c.fp8"], expected_files[1]);
  EXPECT_EQ(index["weight_map"]["c.fp8_scale_inv"], expected_files[2]);
  EXPECT_EQ(index["weight_map"]["e.scalar"], expected_files[2]);
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
}

TEST(SafetensorsWriterTest, RoundTripsThroughTheCheckpointReader) {
  TempDir dir;
  const std::vector<TestTensor> tensors = MixedTensors();
  testing::WriteCheckpoint(dir.path(), tensors, testing::TinyConfigJson(256, /*fp8_block=*/2), /*max_shard_bytes=*/20);
  auto checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->TensorNames().size(), tensors.size());
  for (const TestTensor& tensor : tensors) {
    const TensorLocation* location = (*checkpoint)->Find(tensor.name);
    ASSERT_NE(location, nullptr) << tensor.name;
    EXPECT_EQ(location->dtype, tensor.dtype);
    EXPECT_EQ(location->shape, tensor.shape);
    auto raw = (*checkpoint)->RawBytes(tensor.name);
    ASSERT_TRUE(raw.ok());
    const std::vector<std::byte> expected = EncodeValues(tensor.dtype, tensor.values);
    ASSERT_EQ(raw->size(), expected.size());
    EXPECT_EQ(0, std::memcmp(raw->data(), expected.data(), expected.size())) << tensor.name;
  }
  auto bf16 = (*checkpoint)->LoadFloat("b.bf16");
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(std::vector<float>(bf16->values().begin(), bf16->values().end()),
            (std::vector<float>{1.0f, -2.5f, 0.15625f, 299008.0f, -0.0f, 7.0f}));  // 3e5 rounds in bf16
  auto fp8 = (*checkpoint)->LoadFloat("c.fp8");  // dequantized with the 0.25 block scale
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  EXPECT_EQ(std::vector<float>(fp8->values().begin(), fp8->values().end()),
            (std::vector<float>{0.25f, -0.125f, 112.0f, 0.00390625f}));
  auto scalar = (*checkpoint)->LoadFloat("e.scalar");
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->values()[0], 42.0f);
}

TEST(SafetensorsWriterTest, RejectsMisuse) {
  TempDir dir;
  EXPECT_EQ(ShardedSafetensorsWriter::Create(dir.path(), {{"x", DType::kF32, {1}}, {"x", DType::kF32, {2}}}, 100)
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardedSafetensorsWriter::Create(dir.path(), {{"", DType::kF32, {1}}}, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardedSafetensorsWriter::Create(dir.path(), {{"x", DType::kF32, {-1}}}, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ShardedSafetensorsWriter::Create(dir.path() / "missing", {{"x", DType::kF32, {1}}}, 100).ok());

  auto writer = ShardedSafetensorsWriter::Create(dir.path(), {{"x", DType::kF32, {2}}, {"y", DType::kBF16, {1}}}, 100);
  ASSERT_TRUE(writer.ok());
  const std::vector<std::byte> four(4), eight(8), two(2);
  EXPECT_EQ((*writer)->Write("x", four).code(), absl::StatusCode::kInvalidArgument);  // wrong size
  EXPECT_EQ((*writer)->Write("z", eight).code(), absl::StatusCode::kInvalidArgument);  // unknown
  EXPECT_TRUE((*writer)->Write("x", eight).ok());
  EXPECT_EQ((*writer)->Write("x", eight).code(), absl::StatusCode::kInvalidArgument);  // twice
  EXPECT_EQ((*writer)->Finish().code(), absl::StatusCode::kFailedPrecondition);       // y missing
  EXPECT_TRUE((*writer)->Write("y", two).ok());
  EXPECT_TRUE((*writer)->Finish().ok());
}

TEST(SafetensorsWriterTest, ShardFileNamesFollowTransformers) {
  EXPECT_EQ(ShardFileName(0, 1), "model-00001-of-00001.safetensors");
  EXPECT_EQ(ShardFileName(162, 163), "model-00163-of-00163.safetensors");
}

}  // namespace
}  // namespace expertmesh
