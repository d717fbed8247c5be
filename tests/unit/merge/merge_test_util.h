// Test helpers for engine/merge: temporary directories and small real checkpoints (config.json of
// a tiny DeepSeek-V3 plus sharded safetensors written by ShardedSafetensorsWriter), so merge tests
// run against real files through the real Checkpoint reader.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/core/dtype.h"
#include "engine/merge/safetensors_writer.h"
#include "gtest/gtest.h"

namespace expertmesh::testing {

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "expertmesh-merge-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct TestTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;  // must be representable in dtype (FP8: the raw e4m3 values)
};

inline std::vector<std::byte> EncodeValues(DType dtype, const std::vector<float>& values) {
  std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::kF32: std::memcpy(&bytes[4 * i], &values[i], 4); break;
      case DType::kBF16: {
        const uint16_t bits = FloatToBFloat16(values[i]);
        std::memcpy(&bytes[2 * i], &bits, 2);
        break;
      }
      case DType::kF16: {
        const uint16_t bits = FloatToFloat16(values[i]);
        std::memcpy(&bytes[2 * i], &bits, 2);
        break;
      }
      case DType::kF8E4M3: bytes[i] = static_cast<std::byte>(FloatToFloat8E4M3(values[i])); break;
    }
  }
  return bytes;
}

// config.json of a tiny DeepSeek-V3 (the bundled models' architecture). `hidden_size` lets a test
// make a parent with a different config; `fp8_block` > 0 adds an fp8 quantization_config.
inline std::string TinyConfigJson(int hidden_size = 256, int fp8_block = 0) {
  std::string json = R"({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 1536, "hidden_size": )" + std::to_string(hidden_size) + R"(, "intermediate_size": 512,
    "moe_intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
    "max_position_embeddings": 2048, "q_lora_rank": 96, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16, "v_head_dim": 32, "attention_bias": false, "n_routed_experts": 8,
    "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
    "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
    "norm_topk_prob": true, "routed_scaling_factor": 2.5, "rms_norm_eps": 1e-06, "rope_interleave": true,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "tie_word_embeddings": false)";
  if (fp8_block > 0) {
    json += R"(, "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
      "weight_block_size": [)" + std::to_string(fp8_block) + ", " + std::to_string(fp8_block) + "]}";
  }
  return json + "}\n";
}

inline void WriteTextFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

// Writes a checkpoint directory: config.json + sharded safetensors of `tensors`.
inline void WriteCheckpoint(const std::filesystem::path& directory, const std::vector<TestTensor>& tensors,
                            const std::string& config_json = TinyConfigJson(), uint64_t max_shard_bytes = 1 << 20) {
  std::filesystem::create_directories(directory);
  WriteTextFile(directory / "config.json", config_json);
  std::vector<TensorSpec> specs;
  for (const TestTensor& tensor : tensors) specs.push_back({tensor.name, tensor.dtype, tensor.shape});
  auto writer = ShardedSafetensorsWriter::Create(directory, specs, max_shard_bytes);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const TestTensor& tensor : tensors) {
    const std::vector<std::byte> bytes = EncodeValues(tensor.dtype, tensor.values);
    ASSERT_TRUE((*writer)->Write(tensor.name, bytes).ok());
  }
  ASSERT_TRUE((*writer)->Finish().ok());
}

}  // namespace expertmesh::testing
