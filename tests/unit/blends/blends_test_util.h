// Test helpers for live blends: small real parent checkpoints (the tiny DeepSeek-V3 config of
// tests/unit/merge with a narrow hidden size, only the routed experts, bf16 values from a seed),
// and a WeightSetStore for shard 0 of 2 over them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/format/model_config.h"
#include "expert-svc/weight_set_store.h"
#include "tests/unit/merge/merge_test_util.h"

namespace expertmesh::testing {

inline constexpr int kTinyHidden = 32;
inline constexpr int kTinyIntermediate = 96;  // TinyConfigJson's moe_intermediate_size

// Routed experts of MoE layers 1..3, experts 0..7, values N(0, scale) rounded to bf16.
inline std::vector<TestTensor> TinyExpertTensors(uint64_t seed, float scale = 0.05f,
                                                 int intermediate = kTinyIntermediate) {
  std::mt19937_64 random(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<TestTensor> tensors;
  for (int layer = 1; layer <= 3; ++layer) {
    for (int expert = 0; expert < 8; ++expert) {
      const std::string prefix = "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(expert) + ".";
      for (const char* matrix : {"gate_proj", "up_proj", "down_proj"}) {
        std::vector<int64_t> shape = std::string(matrix) == "down_proj" ? std::vector<int64_t>{kTinyHidden, intermediate}
                                                                         : std::vector<int64_t>{intermediate, kTinyHidden};
        std::vector<float> values(static_cast<size_t>(shape[0] * shape[1]));
        for (float& value : values) value = BFloat16ToFloat(FloatToBFloat16(normal(random)));
        tensors.push_back({prefix + matrix + ".weight", DType::kBF16, shape, std::move(values)});
      }
    }
  }
  return tensors;
}

// A parent checkpoint directory (config.json + safetensors) under `root`.
inline std::filesystem::path WriteTinyParent(const std::filesystem::path& root, const std::string& name, uint64_t seed,
                                             const std::string& config_json = TinyConfigJson(kTinyHidden)) {
  const std::filesystem::path directory = root / name;
  WriteCheckpoint(directory, TinyExpertTensors(seed), config_json);
  return directory;
}

inline ModelConfig TinyModelConfig() {
  return ModelConfig::FromJson(TinyConfigJson(kTinyHidden)).value();
}

// Shard 0 of 2: experts 0-3 of every MoE layer.
inline expert_service::HostedExperts TinyShardExperts() {
  return {{1, {0, 1, 2, 3}}, {2, {0, 1, 2, 3}}, {3, {0, 1, 2, 3}}};
}

// Float32 bytes of one parent's hosted matrices: 3 layers x 4 experts x 3 x 96 x 32 x 4.
inline constexpr uint64_t kTinyShardBytes = 3ull * 4 * 3 * kTinyIntermediate * kTinyHidden * 4;

inline std::unique_ptr<expert_service::WeightSetStore> TinyStore(
    uint64_t budget_bytes = 0, std::unique_ptr<expert_service::ExpertBackend> backend = nullptr) {
  expert_service::WeightSetStoreOptions options;
  options.shard_name = "shard-0";
  options.model = TinyModelConfig();
  options.hosted = TinyShardExperts();
  options.budget_bytes = budget_bytes;
  return std::make_unique<expert_service::WeightSetStore>(
      std::move(options), backend ? std::move(backend) : expert_service::MakeCpuExpertBackend());
}

}  // namespace expertmesh::testing
