// EnsureBenchCheckpoint: config.json from the V2-Lite shape, random bf16 tensors.
#include "bench/services/bench_checkpoint.h"

#include <cmath>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/core/dtype.h"
#include "engine/core/status_macros.h"
#include "engine/format/model_config.h"
#include "engine/merge/safetensors_writer.h"
#include "engine/model/model_weights.h"

namespace expertmesh::bench {
namespace {

nlohmann::json ConfigJson(const BenchModelShape& shape) {
  return {
      {"architectures", {"DeepseekV2ForCausalLM"}},
      {"model_type", "deepseek_v2"},
      {"vocab_size", shape.vocab_size},
      {"hidden_size", shape.hidden_size},
      {"intermediate_size", 10944},
      {"moe_intermediate_size", shape.moe_intermediate_size},
      {"num_hidden_layers", 1 + shape.moe_layers},
      {"num_attention_heads", 16},
      {"num_key_value_heads", 16},
      {"n_shared_experts", 2},
      {"n_routed_experts", shape.n_routed_experts},
      {"num_experts_per_tok", shape.num_experts_per_tok},
      {"routed_scaling_factor", 1.0},
      {"kv_lora_rank", 512},
      {"q_lora_rank", nullptr},
      {"qk_rope_head_dim", 64},
      {"v_head_dim", 128},
      {"qk_nope_head_dim", 128},
      {"topk_method", "greedy"},
      {"n_group", 1},
      {"topk_group", 1},
      {"moe_layer_freq", 1},
      {"first_k_dense_replace", 1},
      {"norm_topk_prob", false},
      {"scoring_func", "softmax"},
      {"hidden_act", "silu"},
      {"max_position_embeddings", 4096},
      {"rms_norm_eps", 1e-6},
      {"tie_word_embeddings", false},
      {"rope_theta", 10000},
      {"bos_token_id", 0},
      // An id no random model prefers: generation runs for the whole budget.
      {"eos_token_id", shape.vocab_size - 1},
      {"torch_dtype", "bfloat16"},
  };
}

// xorshift64*: fast enough for gigabytes of weights.
class FastRandom {
 public:
  explicit FastRandom(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  float Uniform() {  // [-1, 1)
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return static_cast<float>((state_ * 0x2545F4914F6CDD1Dull) >> 40) / 8388608.0f - 1.0f;
  }

 private:
  uint64_t state_;
};

std::vector<std::byte> RandomBf16(const WeightSpec& spec, uint64_t seed) {
  int64_t count = 1;
  for (int64_t dim : spec.shape) count *= dim;
  std::vector<std::byte> bytes(count * 2);
  FastRandom random(seed);
  const bool norm = spec.shape.size() == 1;
  const bool embedding = spec.name == "model.embed_tokens.weight";
  const float scale = norm ? 0.1f : embedding ? 1.0f : std::sqrt(3.0f / static_cast<float>(spec.shape[1]));
  const float offset = norm ? 1.0f : 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t bits = FloatToBFloat16(offset + scale * random.Uniform());
    std::memcpy(bytes.data() + 2 * i, &bits, 2);
  }
  return bytes;
}

}  // namespace

absl::Status EnsureBenchCheckpoint(const std::filesystem::path& directory, const BenchModelShape& shape) {
  const nlohmann::json config_json = ConfigJson(shape);
  const std::filesystem::path config_path = directory / "config.json";
  const std::filesystem::path done_marker = directory / ".complete";
  if (std::filesystem::exists(done_marker)) {
    std::ifstream existing(config_path);
    std::stringstream text;
    text << existing.rdbuf();
    const nlohmann::json previous = nlohmann::json::parse(text.str(), nullptr, false);
    if (previous == config_json) {
      std::fprintf(stderr, "bench: reusing checkpoint in %s\n", directory.c_str());
      return absl::OkStatus();
    }
  }
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  std::ofstream(config_path) << config_json.dump(2);
  EXPERTMESH_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(config_path));

  std::vector<WeightSpec> specs;
  EXPERTMESH_ASSIGN_OR_RETURN(specs, NonExpertWeightSpecs(config));
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (!config.IsMoeLayer(layer)) continue;
    for (int32_t expert = 0; expert < config.n_routed_experts; ++expert) {
      for (WeightSpec& spec : RoutedExpertWeightSpecs(config, layer, expert)) specs.push_back(std::move(spec));
    }
  }
  std::vector<TensorSpec> tensors;
  uint64_t total = 0;
  for (const WeightSpec& spec : specs) {
    tensors.push_back({spec.name, DType::kBF16, spec.shape});
    total += tensors.back().ByteSize();
  }
  EXPERTMESH_ASSIGN_OR_RETURN(auto writer, ShardedSafetensorsWriter::Create(directory, tensors, 2ull << 30));
  uint64_t written = 0, next_report = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<std::byte> bytes = RandomBf16(specs[i], 1000 + i);
    EXPERTMESH_RETURN_IF_ERROR(writer->Write(specs[i].name, bytes));
    written += bytes.size();
    if (written >= next_report || i + 1 == specs.size()) {
      std::fprintf(stderr, "bench: writing random checkpoint: %.0f / %.0f MB\n", written / 1e6, total / 1e6);
      next_report = written + total / 10;
    }
  }
  EXPERTMESH_RETURN_IF_ERROR(writer->Finish());
  std::ofstream(done_marker) << "ok\n";
  return absl::OkStatus();
}

}  // namespace expertmesh::bench
