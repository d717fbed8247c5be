// Weight specs (names and config-implied shapes), slot lookup by name, validation.
#include "engine/model/model_weights.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/core/status_macros.h"

namespace expertmesh {
namespace {

std::string LayerPrefix(int64_t layer) { return absl::StrCat("model.layers.", layer, "."); }

void AddMlpSpecs(const std::string& prefix, int64_t hidden, int64_t intermediate,
                 std::vector<WeightSpec>& specs) {
  specs.push_back({prefix + "gate_proj.weight", {intermediate, hidden}});
  specs.push_back({prefix + "up_proj.weight", {intermediate, hidden}});
  specs.push_back({prefix + "down_proj.weight", {hidden, intermediate}});
}

Tensor* MlpSlot(MlpWeights& mlp, std::string_view rest) {
  if (rest == "gate_proj.weight") return &mlp.gate_proj;
  if (rest == "up_proj.weight") return &mlp.up_proj;
  if (rest == "down_proj.weight") return &mlp.down_proj;
  return nullptr;
}

}  // namespace

uint64_t ModelWeights::ByteSize() const {
  uint64_t bytes = (embed_tokens.size() + norm.size() + lm_head.size()) * sizeof(float);
  auto add_mlp = [&](const MlpWeights& m) {
    bytes += (m.gate_proj.size() + m.up_proj.size() + m.down_proj.size()) * sizeof(float);
  };
  for (const LayerWeights& layer : layers) {
    const AttentionWeights& a = layer.attention;
    for (const Tensor* t : {&layer.input_layernorm, &layer.post_attention_layernorm, &a.q_proj,
                            &a.q_a_proj, &a.q_a_layernorm, &a.q_b_proj, &a.kv_a_proj_with_mqa,
                            &a.kv_a_layernorm, &a.kv_b_proj, &a.o_proj}) {
      bytes += t->size() * sizeof(float);
    }
    if (layer.dense_mlp) add_mlp(*layer.dense_mlp);
    if (layer.shared_experts) add_mlp(*layer.shared_experts);
    if (layer.gate) {
      bytes += (layer.gate->weight.size() + layer.gate->e_score_correction_bias.size()) * sizeof(float);
    }
  }
  return bytes;
}

absl::Status ValidateConfigForModel(const ModelConfig& c) {
  auto positive = [](int64_t value, const char* field) -> absl::Status {
    if (value <= 0) return absl::InvalidArgumentError(absl::StrCat("config ", field, " must be > 0, got ", value));
    return absl::OkStatus();
  };
  EXPERTMESH_RETURN_IF_ERROR(positive(c.vocab_size, "vocab_size"));
  EXPERTMESH_RETURN_IF_ERROR(positive(c.hidden_size, "hidden_size"));
  EXPERTMESH_RETURN_IF_ERROR(positive(c.num_hidden_layers, "num_hidden_layers"));
  EXPERTMESH_RETURN_IF_ERROR(positive(c.num_attention_heads, "num_attention_heads"));
  EXPERTMESH_RETURN_IF_ERROR(positive(c.kv_lora_rank, "kv_lora_rank"));
  EXPERTMESH_RETURN_IF_ERROR(positive(c.qk_rope_head_dim, "qk_rope_head_dim"));
  EXPERTMESH_RETURN_IF_ERROR(positive(c.v_head_dim, "v_head_dim"));
  if (c.qk_nope_head_dim < 0) return absl::InvalidArgumentError("config qk_nope_head_dim must be >= 0");
  if (c.qk_rope_head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config qk_rope_head_dim must be even, got ", c.qk_rope_head_dim));
  }
  if (c.q_lora_rank) EXPERTMESH_RETURN_IF_ERROR(positive(*c.q_lora_rank, "q_lora_rank"));
  if (c.first_k_dense_replace > 0 || c.n_routed_experts == 0) {
    EXPERTMESH_RETURN_IF_ERROR(positive(c.intermediate_size, "intermediate_size"));
  }
  if (c.n_routed_experts > 0) {
    EXPERTMESH_RETURN_IF_ERROR(positive(c.moe_intermediate_size, "moe_intermediate_size"));
    EXPERTMESH_RETURN_IF_ERROR(positive(c.num_experts_per_tok, "num_experts_per_tok"));
    EXPERTMESH_RETURN_IF_ERROR(positive(c.n_group, "n_group"));
    if (c.n_routed_experts % c.n_group != 0) {
      return absl::InvalidArgumentError(absl::StrCat("config n_routed_experts (", c.n_routed_experts,
                                                     ") must be divisible by n_group (", c.n_group, ")"));
    }
    if (c.topk_group <= 0 || c.topk_group > c.n_group) {
      return absl::InvalidArgumentError(absl::StrCat("config topk_group must be in [1, n_group=", c.n_group,
                                                     "], got ", c.topk_group));
    }
    const int64_t selectable = c.n_routed_experts / c.n_group *
                               (c.topk_method == TopKMethod::kGreedy ? c.n_group : c.topk_group);
    if (c.num_experts_per_tok > selectable) {
      return absl::InvalidArgumentError(absl::StrCat("config num_experts_per_tok (", c.num_experts_per_tok,
                                                     ") exceeds the ", selectable, " selectable experts"));
    }
    if (c.topk_method == TopKMethod::kNoAuxTc && c.n_routed_experts / c.n_group < 2) {
      return absl::InvalidArgumentError("noaux_tc needs at least 2 experts per group (groups are scored by their top-2)");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WeightSpec>> NonExpertWeightSpecs(const ModelConfig& c) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateConfigForModel(c));
  const int64_t hidden = c.hidden_size;
  const int64_t heads = c.num_attention_heads;
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, hidden}});
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const std::string p = LayerPrefix(layer);
    specs.push_back({p + "input_layernorm.weight", {hidden}});
    specs.push_back({p + "post_attention_layernorm.weight", {hidden}});
    const std::string a = p + "self_attn.";
    if (c.q_lora_rank) {
      specs.push_back({a + "q_a_proj.weight", {*c.q_lora_rank, hidden}});
      specs.push_back({a + "q_a_layernorm.weight", {*c.q_lora_rank}});
      specs.push_back({a + "q_b_proj.weight", {heads * c.qk_head_dim(), *c.q_lora_rank}});
    } else {
      specs.push_back({a + "q_proj.weight", {heads * c.qk_head_dim(), hidden}});
    }
    specs.push_back({a + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, hidden}});
    specs.push_back({a + "kv_a_layernorm.weight", {c.kv_lora_rank}});
    specs.push_back({a + "kv_b_proj.weight", {heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}});
    specs.push_back({a + "o_proj.weight", {hidden, heads * c.v_head_dim}});
    if (c.IsMoeLayer(layer)) {
      specs.push_back({p + "mlp.gate.weight", {c.n_routed_experts, hidden}});
      if (c.topk_method == TopKMethod::kNoAuxTc) {
        specs.push_back({p + "mlp.gate.e_score_correction_bias", {c.n_routed_experts}});
      }
      if (c.n_shared_experts > 0) {
        AddMlpSpecs(p + "mlp.shared_experts.", hidden, c.moe_intermediate_size * c.n_shared_experts, specs);
      }
    } else {
      AddMlpSpecs(p + "mlp.", hidden, c.intermediate_size, specs);
    }
  }
  specs.push_back({"model.norm.weight", {hidden}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, hidden}});
  return specs;
}

std::vector<WeightSpec> RoutedExpertWeightSpecs(const ModelConfig& c, int64_t layer, int64_t expert) {
  std::vector<WeightSpec> specs;
  AddMlpSpecs(absl::StrCat(LayerPrefix(layer), "mlp.experts.", expert, "."), c.hidden_size,
              c.moe_intermediate_size, specs);
  return specs;
}

Tensor* FindWeightSlot(ModelWeights& w, const ModelConfig& c, const std::string& name) {
  if (static_cast<int64_t>(w.layers.size()) != c.num_hidden_layers) w.layers.resize(c.num_hidden_layers);
  if (name == "model.embed_tokens.weight") return &w.embed_tokens;
  if (name == "model.norm.weight") return &w.norm;
  if (name == "lm_head.weight") return &w.lm_head;
  constexpr std::string_view kLayers = "model.layers.";
  if (name.rfind(kLayers, 0) != 0) return nullptr;
  const std::string_view after = std::string_view(name).substr(kLayers.size());
  const size_t dot = after.find('.');
  int64_t layer = 0;
  if (dot == std::string_view::npos || !absl::SimpleAtoi(absl::string_view(after.data(), dot), &layer) || layer < 0 ||
      layer >= c.num_hidden_layers) {
    return nullptr;
  }
  LayerWeights& l = w.layers[layer];
  const std::string_view rest = after.substr(dot + 1);
  if (rest == "input_layernorm.weight") return &l.input_layernorm;
  if (rest == "post_attention_layernorm.weight") return &l.post_attention_layernorm;
  constexpr std::string_view kAttention = "self_attn.";
  if (rest.rfind(kAttention, 0) == 0) {
    const std::string_view t = rest.substr(kAttention.size());
    AttentionWeights& a = l.attention;
    if (t == "q_proj.weight") return &a.q_proj;
    if (t == "q_a_proj.weight") return &a.q_a_proj;
    if (t == "q_a_layernorm.weight") return &a.q_a_layernorm;
    if (t == "q_b_proj.weight") return &a.q_b_proj;
    if (t == "kv_a_proj_with_mqa.weight") return &a.kv_a_proj_with_mqa;
    if (t == "kv_a_layernorm.weight") return &a.kv_a_layernorm;
    if (t == "kv_b_proj.weight") return &a.kv_b_proj;
    if (t == "o_proj.weight") return &a.o_proj;
    return nullptr;
  }
  if (rest == "mlp.gate.weight") {
    if (!l.gate) l.gate.emplace();
    return &l.gate->weight;
  }
  if (rest == "mlp.gate.e_score_correction_bias") {
    if (!l.gate) l.gate.emplace();
    return &l.gate->e_score_correction_bias;
  }
  constexpr std::string_view kShared = "mlp.shared_experts.";
  if (rest.rfind(kShared, 0) == 0) {
    if (!l.shared_experts) l.shared_experts.emplace();
    return MlpSlot(*l.shared_experts, rest.substr(kShared.size()));
  }
  constexpr std::string_view kMlp = "mlp.";
  if (rest.rfind(kMlp, 0) == 0 && rest.find("experts") == std::string_view::npos) {
    if (!l.dense_mlp) l.dense_mlp.emplace();
    return MlpSlot(*l.dense_mlp, rest.substr(kMlp.size()));
  }
  return nullptr;
}

absl::Status ValidateMlpWeights(const MlpWeights& mlp, int64_t hidden, int64_t intermediate,
                                const std::string& what) {
  const std::vector<int64_t> up_shape = {intermediate, hidden};
  const std::vector<int64_t> down_shape = {hidden, intermediate};
  for (auto [tensor, shape, name] :
       {std::tuple{&mlp.gate_proj, &up_shape, "gate_proj"}, std::tuple{&mlp.up_proj, &up_shape, "up_proj"},
        std::tuple{&mlp.down_proj, &down_shape, "down_proj"}}) {
    if (tensor->shape() != *shape) {
      return absl::InvalidArgumentError(absl::StrCat(what, ".", name, ": shape ", tensor->ShapeString(),
                                                     ", expected ", FormatShape(*shape)));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateModelWeights(const ModelConfig& config, const ModelWeights& weights) {
  EXPERTMESH_ASSIGN_OR_RETURN(std::vector<WeightSpec> specs, NonExpertWeightSpecs(config));
  if (static_cast<int64_t>(weights.layers.size()) != config.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("model weights have ", weights.layers.size(),
                                                   " layers, config num_hidden_layers is ",
                                                   config.num_hidden_layers));
  }
  ModelWeights& mutable_weights = const_cast<ModelWeights&>(weights);  // lookup only, no resize
  for (const WeightSpec& spec : specs) {
    const Tensor* slot = FindWeightSlot(mutable_weights, config, spec.name);
    if (slot == nullptr || slot->empty()) {
      return absl::InvalidArgumentError(absl::StrCat("weight ", spec.name, " is missing (expected shape ",
                                                     FormatShape(spec.shape), ")"));
    }
    if (slot->shape() != spec.shape) {
      return absl::InvalidArgumentError(absl::StrCat("weight ", spec.name, " has shape ", slot->ShapeString(),
                                                     ", config implies ", FormatShape(spec.shape)));
    }
  }
  return absl::OkStatus();
}

}  // namespace expertmesh
