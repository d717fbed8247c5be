// Test helpers for engine/model: tiny V2/V3 configs and deterministic random weights built in
// memory (no checkpoint files), scaled like the conformance fixtures so logits are well spread.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>

#include "engine/format/model_config.h"
#include "engine/model/local_routed_experts.h"
#include "engine/model/model_weights.h"

namespace expertmesh::testing {

inline ModelConfig TinyV3Config() {
  ModelConfig c;
  c.model_type = "deepseek_v3";
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.moe_intermediate_size = 16;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 64;
  c.q_lora_rank = 24;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 8;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.first_k_dense_replace = 1;
  c.n_group = 4;
  c.topk_group = 2;
  c.topk_method = TopKMethod::kNoAuxTc;
  c.scoring_func = ScoringFunction::kSigmoid;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.yarn = YarnScaling{4.0, 16, 32.0, 1.0, 1.0, 1.0};
  c.rope_interleave = true;
  return c;
}

inline ModelConfig TinyV2LiteConfig() {
  ModelConfig c = TinyV3Config();
  c.model_type = "deepseek_v2";
  c.q_lora_rank.reset();
  c.n_shared_experts = 2;
  c.n_routed_experts = 6;
  c.num_experts_per_tok = 3;
  c.n_group = 1;
  c.topk_group = 1;
  c.topk_method = TopKMethod::kGreedy;
  c.scoring_func = ScoringFunction::kSoftmax;
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.0;
  c.yarn = YarnScaling{4.0, 16, 32.0, 1.0, 0.707, 0.707};
  return c;
}

inline void FillRandom(Tensor& t, std::mt19937_64& rng, float scale, float offset = 0.0f) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : t.values()) v = offset + scale * uniform(rng);
}

inline void FillLike(Tensor& t, const std::vector<int64_t>& shape, std::mt19937_64& rng) {
  t = Tensor(shape);
  if (shape.size() == 1) {
    FillRandom(t, rng, 0.3f, 1.0f);  // norm weights around 1
  } else {
    FillRandom(t, rng, std::sqrt(3.0f / static_cast<float>(shape[1])));  // unit-variance outputs
  }
}

inline ModelWeights RandomModelWeights(const ModelConfig& config, uint64_t seed) {
  std::mt19937_64 rng(seed);
  ModelWeights weights;
  const std::vector<WeightSpec> specs = NonExpertWeightSpecs(config).value();
  for (const WeightSpec& spec : specs) {
    Tensor* slot = FindWeightSlot(weights, config, spec.name);
    FillLike(*slot, spec.shape, rng);
    if (spec.name == "model.embed_tokens.weight") FillRandom(*slot, rng, 1.7f);
    if (spec.name.find("e_score_correction_bias") != std::string::npos) FillRandom(*slot, rng, 0.125f, 0.125f);
  }
  return weights;
}

inline std::unique_ptr<LocalRoutedExperts> RandomExperts(const ModelConfig& config, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto experts = std::make_unique<LocalRoutedExperts>(config.hidden_size, config.moe_intermediate_size);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (!config.IsMoeLayer(layer)) continue;
    for (int32_t e = 0; e < config.n_routed_experts; ++e) {
      MlpWeights mlp;
      const std::vector<WeightSpec> specs = RoutedExpertWeightSpecs(config, layer, e);
      FillLike(mlp.gate_proj, specs[0].shape, rng);
      FillLike(mlp.up_proj, specs[1].shape, rng);
      FillLike(mlp.down_proj, specs[2].shape, rng);
      if (!experts->AddExpert(layer, e, std::move(mlp)).ok()) return nullptr;
    }
  }
  return experts;
}

// max |a - b| / max |b|
inline double RelativeMaxError(std::span<const float> a, std::span<const float> b) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return scale == 0.0 ? diff : diff / scale;
}

}  // namespace expertmesh::testing
