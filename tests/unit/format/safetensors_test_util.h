// Test helpers: writing real .safetensors bytes (valid or deliberately broken) and checkpoint
// directories into a per-test temporary directory, so format tests exercise the real reader.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/core/dtype.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace expertmesh::testing {

struct TensorBytes {
  std::string name;
  std::string dtype;            // safetensors spelling
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

inline TensorBytes F32Tensor(std::string name, std::vector<int64_t> shape, const std::vector<float>& values) {
  TensorBytes t{std::move(name), "F32", std::move(shape), std::vector<uint8_t>(values.size() * 4)};
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

inline TensorBytes BF16Tensor(std::string name, std::vector<int64_t> shape, const std::vector<float>& values) {
  TensorBytes t{std::move(name), "BF16", std::move(shape), std::vector<uint8_t>(values.size() * 2)};
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t bits = FloatToBFloat16(values[i]);
    std::memcpy(t.bytes.data() + 2 * i, &bits, 2);
  }
  return t;
}

inline std::vector<float> Iota(size_t count, float start = 0.5f, float step = 0.25f) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = start + step * static_cast<float>(i);
  return values;
}

// The JSON header of `tensors` laid out back to back, in order.
inline nlohmann::json HeaderFor(const std::vector<TensorBytes>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const TensorBytes& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  return header;
}

// File bytes: 8-byte little-endian length, header text, data.
inline std::string FileBytes(const std::string& header_text, const std::vector<TensorBytes>& tensors) {
  std::string out(8, '\0');
  uint64_t length = header_text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  out += header_text;
  for (const TensorBytes& t : tensors) out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  return out;
}

inline std::string FileBytes(const std::vector<TensorBytes>& tensors) {
  return FileBytes(HeaderFor(tensors).dump(), tensors);
}

inline void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "writing " << path;
}

// A fresh empty directory per test, removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    directory_ = std::filesystem::temp_directory_path() /
                 (std::string("expertmesh_format_") + info->test_suite_name() + "_" + info->name() + "_" +
                  std::to_string(std::random_device{}()));
    std::filesystem::remove_all(directory_);
    std::filesystem::create_directories(directory_);
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::permissions(directory_, std::filesystem::perms::owner_all, ignored);
    for (const auto& entry : std::filesystem::directory_iterator(directory_, ignored)) {
      std::filesystem::permissions(entry.path(), std::filesystem::perms::owner_all, ignored);
    }
    std::filesystem::remove_all(directory_, ignored);
  }
  std::filesystem::path directory_;
};

}  // namespace expertmesh::testing
