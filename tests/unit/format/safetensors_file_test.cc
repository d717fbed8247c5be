// SafetensorsFile / ParseSafetensorsHeader on real bytes written per test: valid files of every
// supported dtype, and one malformed file per failure mode, each expecting DATA_LOSS (or
// NOT_FOUND) with a message naming the file and, where there is one, the tensor.
#include "engine/format/safetensors_file.h"

#include "gtest/gtest.h"
#include "tests/unit/format/safetensors_test_util.h"

namespace expertmesh {
namespace {

using testing::F32Tensor;
using testing::FileBytes;
using testing::HeaderFor;
using testing::Iota;
using testing::TensorBytes;
using testing::WriteFile;

class SafetensorsFileTest : public testing::TempDirTest {
 protected:
  // Writes `bytes` to a file and opens it.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenBytes(const std::string& bytes) {
    path_ = directory_ / "model.safetensors";
    WriteFile(path_, bytes);
    return SafetensorsFile::Open(path_);
  }
  // Expects `code` and a message naming the file and every string in `mentions`.
  void ExpectError(const absl::StatusOr<std::unique_ptr<SafetensorsFile>>& result, absl::StatusCode code,
                   std::vector<std::string> mentions) {
    ASSERT_FALSE(result.ok()) << "malformed file was accepted";
    EXPECT_EQ(result.status().code(), code) << result.status();
    mentions.push_back(path_.string());
    for (const std::string& text : mentions) {
      EXPECT_NE(result.status().message().find(text), std::string::npos)
          << "message does not mention '" << text << "': " << result.status();
    }
  }
  std::filesystem::path path_;
};

std::vector<TensorBytes> TwoTensors() {
  return {F32Tensor("a.weight", {2, 3}, Iota(6)), F32Tensor("b.weight", {4}, Iota(4, -1.0f))};
}

TEST_F(SafetensorsFileTest, ReadsEverySupportedDtypeWithMetadata) {
  std::vector<TensorBytes> tensors = TwoTensors();
  tensors.push_back(testing::BF16Tensor("c.bf16", {3}, {1.0f, -2.0f, 0.5f}));
  tensors.push_back(TensorBytes{"d.f16", "F16", {2}, {0x00, 0x3c, 0x00, 0xc0}});  // 1.0, -2.0
  tensors.push_back(TensorBytes{"e.f8", "F8_E4M3", {2, 2}, {0x38, 0xb8, 0x40, 0x00}});
  tensors.push_back(TensorBytes{"f.ids", "I64", {1}, std::vector<uint8_t>(8, 0)});
  tensors.push_back(TensorBytes{"g.empty", "F32", {0, 5}, {}});
  nlohmann::json header = HeaderFor(tensors);
  header["__metadata__"] = {{"format", "pt"}};
  auto file = OpenBytes(FileBytes(header.dump(), tensors));
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsHeader& h = (*file)->header();
  EXPECT_EQ(h.metadata.at("format"), "pt");
  ASSERT_EQ(h.tensors.size(), tensors.size());
  const SafetensorsEntry* a = (*file)->Find("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  std::span<const std::byte> bytes = (*file)->Bytes(*a);
  ASSERT_EQ(bytes.size(), 24u);
  EXPECT_EQ(std::memcmp(bytes.data(), tensors[0].bytes.data(), 24), 0);
  EXPECT_EQ((*file)->Find("c.bf16")->dtype, DType::kBF16);
  EXPECT_EQ((*file)->Find("d.f16")->dtype, DType::kF16);
  EXPECT_EQ((*file)->Find("e.f8")->dtype, DType::kF8E4M3);
  EXPECT_FALSE((*file)->Find("f.ids")->dtype.has_value());  // valid, but not a compute dtype
  EXPECT_EQ((*file)->Find("f.ids")->dtype_name, "I64");
  EXPECT_EQ((*file)->Find("g.empty")->end, (*file)->Find("g.empty")->begin);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

TEST_F(SafetensorsFileTest, MissingFileIsNotFound) {
  path_ = directory_ / "absent.safetensors";
  ExpectError(SafetensorsFile::Open(path_), absl::StatusCode::kNotFound, {});
}

TEST_F(SafetensorsFileTest, DirectoryIsNotARegularFile) {
  path_ = directory_;
  ExpectError(SafetensorsFile::Open(path_), absl::StatusCode::kDataLoss, {"not a regular file"});
}

TEST_F(SafetensorsFileTest, FileShorterThanHeaderLength) {
  ExpectError(OpenBytes("abc"), absl::StatusCode::kDataLoss, {"8-byte header length"});
  ExpectError(OpenBytes(""), absl::StatusCode::kDataLoss, {"8-byte header length"});
}

TEST_F(SafetensorsFileTest, HeaderLengthBeyondFile) {
  std::string bytes = FileBytes(TwoTensors());
  bytes[0] = static_cast<char>(0xff);  // length 255 + ... > file size
  bytes[1] = static_cast<char>(0x7f);
  ExpectError(OpenBytes(bytes), absl::StatusCode::kDataLoss, {"beyond the file"});
}

TEST_F(SafetensorsFileTest, HeaderLengthAboveFormatLimit) {
  std::string bytes = FileBytes(TwoTensors());
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(0xff);  // 2^64 - 1: no overflow on +8
  ExpectError(OpenBytes(bytes), absl::StatusCode::kDataLoss, {"limit"});
}

TEST_F(SafetensorsFileTest, HeaderIsNotJson) {
  ExpectError(OpenBytes(FileBytes("{\"a.weight\": {\"dtype\": ", {})), absl::StatusCode::kDataLoss,
              {"not valid JSON"});
  ExpectError(OpenBytes(FileBytes("[1, 2, 3]", {})), absl::StatusCode::kDataLoss, {"JSON object"});
}

TEST_F(SafetensorsFileTest, EntryWithoutRequiredFields) {
  ExpectError(OpenBytes(FileBytes(R"({"a.weight": [1]})", {})), absl::StatusCode::kDataLoss, {"a.weight", "object"});
  ExpectError(OpenBytes(FileBytes(R"({"a.weight": {"shape": [1], "data_offsets": [0, 4]}})", {})),
              absl::StatusCode::kDataLoss, {"a.weight", "dtype"});
  ExpectError(OpenBytes(FileBytes(R"({"a.weight": {"dtype": "F32", "data_offsets": [0, 4]}})", {})),
              absl::StatusCode::kDataLoss, {"a.weight", "shape"});
}

TEST_F(SafetensorsFileTest, UnknownDtypeNamesTensor) {
  std::vector<TensorBytes> tensors = TwoTensors();
  tensors[1].dtype = "Q4_K";
  ExpectError(OpenBytes(FileBytes(tensors)), absl::StatusCode::kDataLoss, {"b.weight", "Q4_K"});
}

TEST_F(SafetensorsFileTest, NegativeDimension) {
  nlohmann::json header = HeaderFor(TwoTensors());
  header["a.weight"]["shape"] = {-2, -3};
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"a.weight", "negative"});
}

TEST_F(SafetensorsFileTest, NonIntegerDimension) {
  nlohmann::json header = HeaderFor(TwoTensors());
  header["a.weight"]["shape"] = {2.5, 3};
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"a.weight", "not an integer"});
}

TEST_F(SafetensorsFileTest, HugeDimensionsDoNotOverflow) {
  nlohmann::json header = HeaderFor(TwoTensors());
  header["a.weight"]["shape"] = {uint64_t{1} << 40, uint64_t{1} << 40};  // 2^80 elements
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"a.weight", "overflows"});
  header["a.weight"]["shape"] = {uint64_t{1} << 31, uint64_t{1} << 31};  // 2^62 elements * 4 bytes
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"a.weight", "overflows"});
  header["a.weight"]["shape"] = {18446744073709551615ull};
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"a.weight", "too large"});
}

TEST_F(SafetensorsFileTest, ByteSizeDisagreesWithShape) {
  nlohmann::json header = HeaderFor(TwoTensors());
  header["a.weight"]["shape"] = {2, 2};  // 16 bytes, the offsets hold 24
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"a.weight", "24 bytes", "needs 16"});
}

TEST_F(SafetensorsFileTest, OffsetsBeyondDataSection) {
  nlohmann::json header = HeaderFor(TwoTensors());
  header["b.weight"]["data_offsets"] = {24, 1000024};
  header["b.weight"]["shape"] = {250000};
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"b.weight", "beyond the data section"});
}

TEST_F(SafetensorsFileTest, TruncatedFile) {
  std::string bytes = FileBytes(TwoTensors());
  bytes.resize(bytes.size() - 5);  // the last tensor loses bytes
  ExpectError(OpenBytes(bytes), absl::StatusCode::kDataLoss, {"b.weight", "truncated"});
}

TEST_F(SafetensorsFileTest, EndBeforeBegin) {
  nlohmann::json header = HeaderFor(TwoTensors());
  header["b.weight"]["data_offsets"] = {40, 24};
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"b.weight", "before begin"});
}

TEST_F(SafetensorsFileTest, MalformedOffsets) {
  nlohmann::json header = HeaderFor(TwoTensors());
  header["b.weight"]["data_offsets"] = {24, 32, 40};
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"b.weight", "data_offsets"});
  header["b.weight"]["data_offsets"] = {-8, 8};
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"b.weight", "data_offsets"});
}

TEST_F(SafetensorsFileTest, OverlappingTensors) {
  std::vector<TensorBytes> tensors = {F32Tensor("a.weight", {4}, Iota(4)), F32Tensor("b.weight", {4}, Iota(4)),
                                      F32Tensor("c.weight", {2}, Iota(2))};
  nlohmann::json header = HeaderFor(tensors);
  header["b.weight"]["data_offsets"] = {8, 24};  // shares a.weight's last 8 bytes
  header["c.weight"]["data_offsets"] = {24, 32};
  tensors.pop_back();  // 32 data bytes: a and b written, c's range [24, 32) inside them
  ExpectError(OpenBytes(FileBytes(header.dump(), tensors)), absl::StatusCode::kDataLoss, {"b.weight", "overlap", "a.weight"});
}

TEST_F(SafetensorsFileTest, GapBetweenTensors) {
  std::vector<TensorBytes> tensors = TwoTensors();
  nlohmann::json header = HeaderFor(tensors);
  header["b.weight"]["data_offsets"] = {28, 44};
  tensors.push_back(TensorBytes{"pad", "U8", {4}, {0, 0, 0, 0}});  // 4 more data bytes, unindexed
  ExpectError(OpenBytes(FileBytes(header.dump(), tensors)), absl::StatusCode::kDataLoss, {"b.weight", "gap"});
}

TEST_F(SafetensorsFileTest, TrailingBytesAfterLastTensor) {
  std::string bytes = FileBytes(TwoTensors()) + "junk";
  ExpectError(OpenBytes(bytes), absl::StatusCode::kDataLoss, {"describes 40 data bytes", "44"});
}

TEST_F(SafetensorsFileTest, DeeplyNestedHeaderIsAnErrorNotACrash) {
  const std::string deep = std::string(500000, '[') + std::string(500000, ']');
  ExpectError(OpenBytes(FileBytes("{\"a.weight\": " + deep + "}", {})), absl::StatusCode::kDataLoss,
              {"a.weight", "array"});
  nlohmann::json header = HeaderFor(TwoTensors());
  header["a.weight"]["data_offsets"] = nlohmann::json::array();
  ExpectError(OpenBytes(FileBytes(header.dump().replace(header.dump().find("[]"), 2, deep), TwoTensors())),
              absl::StatusCode::kDataLoss, {"a.weight", "data_offsets"});
}

TEST_F(SafetensorsFileTest, MetadataMustHoldStrings) {
  nlohmann::json header = HeaderFor(TwoTensors());
  header["__metadata__"] = {{"format", 7}};
  ExpectError(OpenBytes(FileBytes(header.dump(), TwoTensors())), absl::StatusCode::kDataLoss,
              {"__metadata__", "format"});
}

TEST(ParseSafetensorsHeaderTest, NamesTheLabelGivenAndReadsOnlyTheHeader) {
  std::string bytes = FileBytes(TwoTensors());
  auto header = ParseSafetensorsHeader(std::as_bytes(std::span(bytes.data(), bytes.size())), "in-memory");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->data_size, 40u);
  EXPECT_EQ(header->data_offset, bytes.size() - 40);
  bytes.resize(bytes.size() - 1);
  header = ParseSafetensorsHeader(std::as_bytes(std::span(bytes.data(), bytes.size())), "in-memory");
  ASSERT_FALSE(header.ok());
  EXPECT_NE(header.status().message().find("in-memory"), std::string::npos) << header.status();
}

}  // namespace
}  // namespace expertmesh
