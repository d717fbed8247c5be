// ModelConfig::FromJson / FromFile: reads a DeepSeek-V2/V3 config.json (published DeepSeek layout
// or transformers 5.x's rope_parameters), checks every field that changes the math for type,
// range and consistency, and rejects what no reference implementation computes, by field name.
#include "engine/format/model_config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

using Json = nlohmann::json;

// Largest accepted sizes: far above any real checkpoint, small enough that every product the
// engine forms (e.g. vocab * hidden, layers * experts * hidden * intermediate) fits in int64.
constexpr int64_t kMaxDimension = int64_t{1} << 24;
constexpr int64_t kMaxVocabulary = int64_t{1} << 31;
constexpr int64_t kMaxLayers = int64_t{1} << 16;
constexpr int64_t kMaxPositions = int64_t{1} << 40;

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("config field ", field, ": ", problem));
}

// A short description of a JSON value for error messages. Containers are not serialized: a
// deeply nested one would make the (recursive) serializer overflow the stack.
std::string Describe(const Json& value) {
  if (value.is_array()) return absl::StrCat("an array of ", value.size());
  if (value.is_object()) return absl::StrCat("an object of ", value.size(), " fields");
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return absl::StrCat(value.type_name(), " ", text);
}

// A JSON object plus the dotted path of its fields for error messages.
class FieldReader {
 public:
  FieldReader(const Json& object, std::string prefix) : object_(object), prefix_(std::move(prefix)) {}

  std::string Path(const std::string& key) const { return absl::StrCat(prefix_, key); }
  bool Contains(const std::string& key) const { return object_.contains(key); }
  // Present and not null.
  bool Has(const std::string& key) const { return object_.contains(key) && !object_.at(key).is_null(); }
  const Json& At(const std::string& key) const { return object_.at(key); }

  absl::StatusOr<std::optional<int64_t>> OptionalInt(const std::string& key) const {
    if (!Has(key)) return std::optional<int64_t>();
    const Json& value = object_.at(key);
    if (value.is_number_unsigned()) {
      const uint64_t unsigned_value = value.get<uint64_t>();
      if (unsigned_value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return FieldError(Path(key), absl::StrCat("integer ", unsigned_value, " is out of range"));
      }
      return std::optional<int64_t>(static_cast<int64_t>(unsigned_value));
    }
    if (value.is_number_integer()) return std::optional<int64_t>(value.get<int64_t>());
    return FieldError(Path(key), absl::StrCat("must be an integer, got ", Describe(value)));
  }
  absl::StatusOr<int64_t> RequiredInt(const std::string& key) const {
    EXPERTMESH_ASSIGN_OR_RETURN(std::optional<int64_t> value, OptionalInt(key));
    if (!value) return FieldError(Path(key), "is required");
    return *value;
  }
  absl::StatusOr<int64_t> Int(const std::string& key, int64_t fallback) const {
    EXPERTMESH_ASSIGN_OR_RETURN(std::optional<int64_t> value, OptionalInt(key));
    return value.value_or(fallback);
  }

  absl::StatusOr<std::optional<double>> OptionalDouble(const std::string& key) const {
    if (!Has(key)) return std::optional<double>();
    const Json& value = object_.at(key);
    if (!value.is_number()) return FieldError(Path(key), absl::StrCat("must be a number, got ", Describe(value)));
    const double number = value.get<double>();
    if (!std::isfinite(number)) return FieldError(Path(key), "must be finite");
    return std::optional<double>(number);
  }
  absl::StatusOr<double> Double(const std::string& key, double fallback) const {
    EXPERTMESH_ASSIGN_OR_RETURN(std::optional<double> value, OptionalDouble(key));
    return value.value_or(fallback);
  }

  absl::StatusOr<std::optional<bool>> OptionalBool(const std::string& key) const {
    if (!Has(key)) return std::optional<bool>();
    const Json& value = object_.at(key);
    if (!value.is_boolean()) return FieldError(Path(key), absl::StrCat("must be true or false, got ", Describe(value)));
    return std::optional<bool>(value.get<bool>());
  }
  absl::StatusOr<bool> Bool(const std::string& key, bool fallback) const {
    EXPERTMESH_ASSIGN_OR_RETURN(std::optional<bool> value, OptionalBool(key));
    return value.value_or(fallback);
  }

  absl::StatusOr<std::optional<std::string>> OptionalString(const std::string& key) const {
    if (!Has(key)) return std::optional<std::string>();
    const Json& value = object_.at(key);
    if (!value.is_string()) return FieldError(Path(key), absl::StrCat("must be a string, got ", Describe(value)));
    return std::optional<std::string>(value.get<std::string>());
  }

 private:
  const Json& object_;
  std::string prefix_;
};

absl::Status CheckRange(absl::string_view field, int64_t value, int64_t minimum, int64_t maximum) {
  if (value < minimum || value > maximum) {
    return FieldError(field, absl::StrCat("must be in [", minimum, ", ", maximum, "], got ", value));
  }
  return absl::OkStatus();
}

// Reads `key` as an integer in [minimum, maximum]; `fallback` when absent (nullopt: required).
absl::StatusOr<int64_t> RangedInt(const FieldReader& reader, const std::string& key, int64_t minimum,
                                  int64_t maximum, std::optional<int64_t> fallback = std::nullopt) {
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<int64_t> value, reader.OptionalInt(key));
  if (!value) {
    if (!fallback) return FieldError(reader.Path(key), "is required");
    return *fallback;
  }
  EXPERTMESH_RETURN_IF_ERROR(CheckRange(reader.Path(key), *value, minimum, maximum));
  return *value;
}

// The rope settings of one dictionary (rope_scaling or rope_parameters).
struct RopeSettings {
  std::optional<double> theta;  // only rope_parameters carries it
  std::optional<YarnScaling> yarn;
};

absl::StatusOr<RopeSettings> ParseRopeDictionary(const Json& dictionary, const std::string& field) {
  if (!dictionary.is_object()) {
    return FieldError(field, absl::StrCat("must be an object or null, got ", Describe(dictionary)));
  }
  FieldReader reader(dictionary, field + ".");
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<std::string> type, reader.OptionalString("type"));
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<std::string> rope_type, reader.OptionalString("rope_type"));
  if (type && rope_type && *type != *rope_type) {
    return FieldError(field, absl::StrCat("'type' (", *type, ") and 'rope_type' (", *rope_type, ") disagree"));
  }
  const std::string kind = rope_type ? *rope_type : type.value_or("default");
  RopeSettings settings;
  EXPERTMESH_ASSIGN_OR_RETURN(settings.theta, reader.OptionalDouble("rope_theta"));
  if (settings.theta && !(*settings.theta > 1.0)) {
    return FieldError(reader.Path("rope_theta"), absl::StrCat("must be > 1, got ", *settings.theta));
  }
  if (kind != "yarn" && kind != "default") {
    return FieldError(reader.Path(rope_type ? "rope_type" : "type"),
                      absl::StrCat("rope type '", kind, "' is not supported (only \"yarn\" or none)"));
  }
  static const char* const kYarnKeys[] = {"type", "rope_type", "rope_theta", "factor",
                                          "original_max_position_embeddings", "beta_fast", "beta_slow",
                                          "mscale", "mscale_all_dim", "truncate"};
  for (auto it = dictionary.begin(); it != dictionary.end(); ++it) {
    bool known = false;
    for (const char* key : kYarnKeys) known = known || it.key() == key;
    if (kind == "default") known = it.key() == "type" || it.key() == "rope_type" || it.key() == "rope_theta";
    if (!known) {
      return FieldError(reader.Path(it.key()), absl::StrCat("is not supported for rope type '", kind,
                                                            "' (it would change the positions' math)"));
    }
  }
  if (kind == "default") return settings;

  YarnScaling yarn;
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<double> factor, reader.OptionalDouble("factor"));
  if (!factor) return FieldError(reader.Path("factor"), "is required for yarn");
  if (!(*factor >= 1.0)) return FieldError(reader.Path("factor"), absl::StrCat("must be >= 1, got ", *factor));
  yarn.factor = *factor;
  EXPERTMESH_ASSIGN_OR_RETURN(yarn.original_max_position_embeddings,
                              RangedInt(reader, "original_max_position_embeddings", 1, kMaxPositions, std::nullopt));
  // transformers: `beta_fast or 32`, `beta_slow or 1` (0 means the default there).
  EXPERTMESH_ASSIGN_OR_RETURN(yarn.beta_fast, reader.Double("beta_fast", 32.0));
  EXPERTMESH_ASSIGN_OR_RETURN(yarn.beta_slow, reader.Double("beta_slow", 1.0));
  if (yarn.beta_fast == 0.0) yarn.beta_fast = 32.0;
  if (yarn.beta_slow == 0.0) yarn.beta_slow = 1.0;
  if (!(yarn.beta_fast > 0.0) || !(yarn.beta_slow > 0.0)) {
    return FieldError(field, "beta_fast and beta_slow must be > 0");
  }
  EXPERTMESH_ASSIGN_OR_RETURN(yarn.mscale, reader.Double("mscale", 1.0));
  EXPERTMESH_ASSIGN_OR_RETURN(yarn.mscale_all_dim, reader.Double("mscale_all_dim", 0.0));
  EXPERTMESH_ASSIGN_OR_RETURN(bool truncate, reader.Bool("truncate", true));
  if (!truncate) return FieldError(reader.Path("truncate"), "false is not supported (DeepSeek truncates)");
  settings.yarn = yarn;
  return settings;
}

bool SameYarn(const std::optional<YarnScaling>& a, const std::optional<YarnScaling>& b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return a->factor == b->factor && a->original_max_position_embeddings == b->original_max_position_embeddings &&
         a->beta_fast == b->beta_fast && a->beta_slow == b->beta_slow && a->mscale == b->mscale &&
         a->mscale_all_dim == b->mscale_all_dim;
}

absl::Status ParseRope(const FieldReader& top, ModelConfig& config) {
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<double> top_theta, top.OptionalDouble("rope_theta"));
  if (top_theta && !(*top_theta > 1.0)) return FieldError("rope_theta", absl::StrCat("must be > 1, got ", *top_theta));
  std::optional<RopeSettings> scaling, parameters;
  if (top.Has("rope_scaling")) {
    EXPERTMESH_ASSIGN_OR_RETURN(scaling, ParseRopeDictionary(top.At("rope_scaling"), "rope_scaling"));
    if (scaling->theta) return FieldError("rope_scaling.rope_theta", "belongs at the top level or in rope_parameters");
  }
  if (top.Has("rope_parameters")) {
    EXPERTMESH_ASSIGN_OR_RETURN(parameters, ParseRopeDictionary(top.At("rope_parameters"), "rope_parameters"));
  }
  if (scaling && parameters && !SameYarn(scaling->yarn, parameters->yarn)) {
    return FieldError("rope_parameters", "disagrees with rope_scaling");
  }
  std::optional<double> theta = top_theta;
  if (parameters && parameters->theta) {
    if (theta && *theta != *parameters->theta) {
      return FieldError("rope_parameters.rope_theta",
                        absl::StrCat(*parameters->theta, " disagrees with rope_theta ", *theta));
    }
    theta = parameters->theta;
  }
  config.rope_theta = theta.value_or(10000.0);
  config.yarn = parameters ? parameters->yarn : (scaling ? scaling->yarn : std::nullopt);
  // Note: when max_position_embeddings != factor * original_max_position_embeddings, transformers
  // 4.x used their ratio as the YaRN factor; transformers 5.x and DeepSeek's code use `factor`, as
  // does this engine.
  return absl::OkStatus();
}

absl::Status ParseQuantization(const FieldReader& top, ModelConfig& config) {
  if (!top.Has("quantization_config")) return absl::OkStatus();
  const Json& quantization = top.At("quantization_config");
  if (!quantization.is_object()) {
    return FieldError("quantization_config", absl::StrCat("must be an object, got ", Describe(quantization)));
  }
  FieldReader reader(quantization, "quantization_config.");
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<std::string> method, reader.OptionalString("quant_method"));
  if (!method) return FieldError(reader.Path("quant_method"), "is required");
  if (*method != "fp8") {
    return FieldError(reader.Path("quant_method"),
                      absl::StrCat("'", *method, "' is not supported (only DeepSeek's block-scaled \"fp8\")"));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<std::string> format, reader.OptionalString("fmt"));
  if (format && *format != "e4m3") {
    return FieldError(reader.Path("fmt"), absl::StrCat("'", *format, "' is not supported (only \"e4m3\")"));
  }
  if (!reader.Has("weight_block_size")) {
    return FieldError(reader.Path("weight_block_size"), "is required (per-tensor fp8 is not supported)");
  }
  const Json& block = reader.At("weight_block_size");
  if (!block.is_array() || block.size() != 2 || !block[0].is_number_integer() || !block[1].is_number_integer() ||
      block[0].get<int64_t>() <= 0 || block[1].get<int64_t>() <= 0 || block[0].get<int64_t>() > kMaxDimension ||
      block[1].get<int64_t>() > kMaxDimension) {
    return FieldError(reader.Path("weight_block_size"),
                      absl::StrCat("must be [rows, cols] of positive integers, got ", Describe(block)));
  }
  config.fp8_block_quantized = true;
  config.fp8_block_rows = block[0].get<int64_t>();
  config.fp8_block_cols = block[1].get<int64_t>();
  return absl::OkStatus();
}

absl::Status ParseMoe(const FieldReader& top, ModelConfig& c) {
  const bool is_v3 = c.model_type == "deepseek_v3";
  EXPERTMESH_ASSIGN_OR_RETURN(c.n_routed_experts, RangedInt(top, "n_routed_experts", 0, kMaxLayers, 0));
  EXPERTMESH_ASSIGN_OR_RETURN(c.moe_layer_freq, RangedInt(top, "moe_layer_freq", 1, kMaxLayers, 1));
  // Fields whose defaults differ between DeepSeek's and transformers' config classes are required
  // for MoE models, so that a missing one cannot silently change the math.
  const bool moe = c.n_routed_experts > 0;
  const std::optional<int64_t> moe_default = moe ? std::nullopt : std::optional<int64_t>(0);
  EXPERTMESH_ASSIGN_OR_RETURN(c.moe_intermediate_size,
                              RangedInt(top, "moe_intermediate_size", moe ? 1 : 0, kMaxDimension, moe_default));
  EXPERTMESH_ASSIGN_OR_RETURN(c.num_experts_per_tok,
                              RangedInt(top, "num_experts_per_tok", moe ? 1 : 0, kMaxLayers, moe_default));
  if (moe && !top.Contains("n_shared_experts")) return FieldError("n_shared_experts", "is required (null for none)");
  EXPERTMESH_ASSIGN_OR_RETURN(c.n_shared_experts, RangedInt(top, "n_shared_experts", 0, kMaxLayers, 0));
  EXPERTMESH_ASSIGN_OR_RETURN(c.first_k_dense_replace,
                              RangedInt(top, "first_k_dense_replace", 0, c.num_hidden_layers, moe_default));
  for (const char* key : {"n_group", "topk_group", "routed_scaling_factor"}) {
    if (moe && !top.Contains(key)) return FieldError(key, "is required for MoE models");
  }
  EXPERTMESH_ASSIGN_OR_RETURN(c.n_group, RangedInt(top, "n_group", 1, kMaxLayers, 1));  // null: 1
  EXPERTMESH_ASSIGN_OR_RETURN(c.topk_group, RangedInt(top, "topk_group", 1, kMaxLayers, 1));
  EXPERTMESH_ASSIGN_OR_RETURN(c.routed_scaling_factor, top.Double("routed_scaling_factor", 1.0));
  if (!(c.routed_scaling_factor > 0.0)) {
    return FieldError("routed_scaling_factor", absl::StrCat("must be > 0, got ", c.routed_scaling_factor));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<bool> norm, top.OptionalBool("norm_topk_prob"));
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<std::string> method, top.OptionalString("topk_method"));
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<std::string> scoring, top.OptionalString("scoring_func"));
  if (moe && (!norm || !method || !scoring)) {
    return FieldError(!norm ? "norm_topk_prob" : (!method ? "topk_method" : "scoring_func"),
                      "is required for MoE models");
  }
  c.norm_topk_prob = norm.value_or(false);
  const std::string method_name = method.value_or(is_v3 ? "noaux_tc" : "greedy");
  const std::string scoring_name = scoring.value_or(is_v3 ? "sigmoid" : "softmax");
  if (method_name == "greedy") {
    c.topk_method = TopKMethod::kGreedy;
  } else if (method_name == "group_limited_greedy") {
    c.topk_method = TopKMethod::kGroupLimitedGreedy;
  } else if (method_name == "noaux_tc") {
    c.topk_method = TopKMethod::kNoAuxTc;
  } else {
    return FieldError("topk_method", absl::StrCat("unknown value '", method_name,
                                                  "' (greedy, group_limited_greedy or noaux_tc)"));
  }
  if (scoring_name == "softmax") {
    c.scoring_func = ScoringFunction::kSoftmax;
  } else if (scoring_name == "sigmoid") {
    c.scoring_func = ScoringFunction::kSigmoid;
  } else {
    return FieldError("scoring_func", absl::StrCat("unknown value '", scoring_name, "' (softmax or sigmoid)"));
  }
  // transformers' DeepseekV3 router always scores with sigmoid and selects noaux_tc-style, and
  // DeepSeek's V3 modeling code raises for anything else; transformers' DeepseekV2 router always
  // uses softmax with greedy / group_limited_greedy and ignores norm_topk_prob, while DeepSeek's
  // V2 code would normalize. Configs asking for anything else have no reference: rejected.
  if (is_v3) {
    if (c.scoring_func != ScoringFunction::kSigmoid) {
      return FieldError("scoring_func", "deepseek_v3 routers score with \"sigmoid\"");
    }
    if (c.topk_method != TopKMethod::kNoAuxTc) return FieldError("topk_method", "deepseek_v3 routers use \"noaux_tc\"");
  } else {
    if (c.scoring_func != ScoringFunction::kSoftmax) {
      return FieldError("scoring_func", "deepseek_v2 routers score with \"softmax\"");
    }
    if (c.topk_method == TopKMethod::kNoAuxTc) {
      return FieldError("topk_method", "\"noaux_tc\" needs deepseek_v3 (e_score_correction_bias)");
    }
    if (moe && c.norm_topk_prob) {
      return FieldError("norm_topk_prob", "true is ambiguous for deepseek_v2 (transformers ignores it, "
                                          "DeepSeek's code normalizes); no published V2 checkpoint sets it");
    }
  }
  if (!moe) return absl::OkStatus();
  if (c.num_experts_per_tok > c.n_routed_experts) {
    return FieldError("num_experts_per_tok", absl::StrCat(c.num_experts_per_tok, " exceeds n_routed_experts ",
                                                          c.n_routed_experts));
  }
  if (c.n_routed_experts % c.n_group != 0) {
    return FieldError("n_group", absl::StrCat("n_routed_experts ", c.n_routed_experts,
                                              " is not divisible by n_group ", c.n_group));
  }
  if (c.topk_group > c.n_group) {
    return FieldError("topk_group", absl::StrCat(c.topk_group, " exceeds n_group ", c.n_group));
  }
  const int64_t per_group = c.n_routed_experts / c.n_group;
  if (c.topk_method != TopKMethod::kGreedy && c.num_experts_per_tok > c.topk_group * per_group) {
    return FieldError("num_experts_per_tok", absl::StrCat(c.num_experts_per_tok, " exceeds the ",
                                                          c.topk_group * per_group, " experts of topk_group ",
                                                          c.topk_group, " groups"));
  }
  if (c.topk_method == TopKMethod::kNoAuxTc && c.n_group > 1 && per_group < 2) {
    return FieldError("n_group", "noaux_tc ranks groups by their top-2 experts: needs >= 2 experts per group");
  }
  return absl::OkStatus();
}

absl::Status ParseAttention(const FieldReader& top, ModelConfig& c) {
  if (!top.Contains("q_lora_rank")) return FieldError("q_lora_rank", "is required (null for no query compression)");
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<int64_t> q_lora_rank, top.OptionalInt("q_lora_rank"));
  if (q_lora_rank) EXPERTMESH_RETURN_IF_ERROR(CheckRange("q_lora_rank", *q_lora_rank, 1, kMaxDimension));
  c.q_lora_rank = q_lora_rank;
  EXPERTMESH_ASSIGN_OR_RETURN(c.kv_lora_rank, RangedInt(top, "kv_lora_rank", 1, kMaxDimension));
  EXPERTMESH_ASSIGN_OR_RETURN(c.qk_nope_head_dim, RangedInt(top, "qk_nope_head_dim", 0, kMaxDimension));
  EXPERTMESH_ASSIGN_OR_RETURN(c.qk_rope_head_dim, RangedInt(top, "qk_rope_head_dim", 2, kMaxDimension));
  if (c.qk_rope_head_dim % 2 != 0) {
    return FieldError("qk_rope_head_dim", absl::StrCat("must be even, got ", c.qk_rope_head_dim));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(c.v_head_dim, RangedInt(top, "v_head_dim", 1, kMaxDimension));
  EXPERTMESH_ASSIGN_OR_RETURN(c.attention_bias, top.Bool("attention_bias", false));
  if (c.attention_bias) return FieldError("attention_bias", "true is not supported (no checkpoint of the family has biases)");
  // Derived fields transformers 5.x writes: must agree with the ones they derive from.
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<int64_t> kv_heads, top.OptionalInt("num_key_value_heads"));
  if (kv_heads && *kv_heads != c.num_attention_heads) {
    return FieldError("num_key_value_heads", absl::StrCat(*kv_heads, " differs from num_attention_heads ",
                                                          c.num_attention_heads, " (MLA has one key per head)"));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<int64_t> qk_head_dim, top.OptionalInt("qk_head_dim"));
  if (qk_head_dim && *qk_head_dim != c.qk_head_dim()) {
    return FieldError("qk_head_dim", absl::StrCat(*qk_head_dim, " differs from qk_nope_head_dim + qk_rope_head_dim = ",
                                                  c.qk_head_dim()));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, top.OptionalInt("head_dim"));
  if (head_dim && *head_dim != c.qk_rope_head_dim) {
    return FieldError("head_dim", absl::StrCat(*head_dim, " differs from qk_rope_head_dim ", c.qk_rope_head_dim,
                                               " (transformers sizes RoPE by head_dim)"));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<bool> interleave, top.OptionalBool("rope_interleave"));
  if (c.model_type == "deepseek_v2" && interleave && !*interleave) {
    return FieldError("rope_interleave", "false is not supported for deepseek_v2 (its RoPE always pairs "
                                         "adjacent channels)");
  }
  c.rope_interleave = interleave.value_or(true);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view json_text) {
  Json root;
  try {
    root = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat("config is not valid JSON: ", error.what()));
  }
  if (!root.is_object()) return absl::InvalidArgumentError("config top level must be a JSON object");
  const FieldReader top(root, "");
  ModelConfig c;
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<std::string> model_type, top.OptionalString("model_type"));
  if (!model_type) return FieldError("model_type", "is required");
  if (*model_type != "deepseek_v2" && *model_type != "deepseek_v3") {
    return FieldError("model_type", absl::StrCat("unknown value '", *model_type,
                                                 "' (deepseek_v2 or deepseek_v3)"));
  }
  c.model_type = *model_type;
  EXPERTMESH_ASSIGN_OR_RETURN(c.vocab_size, RangedInt(top, "vocab_size", 1, kMaxVocabulary));
  EXPERTMESH_ASSIGN_OR_RETURN(c.hidden_size, RangedInt(top, "hidden_size", 1, kMaxDimension));
  EXPERTMESH_ASSIGN_OR_RETURN(c.num_hidden_layers, RangedInt(top, "num_hidden_layers", 1, kMaxLayers));
  EXPERTMESH_ASSIGN_OR_RETURN(c.num_attention_heads, RangedInt(top, "num_attention_heads", 1, kMaxDimension));
  EXPERTMESH_ASSIGN_OR_RETURN(c.max_position_embeddings,
                              RangedInt(top, "max_position_embeddings", 1, kMaxPositions));
  EXPERTMESH_RETURN_IF_ERROR(ParseAttention(top, c));
  EXPERTMESH_RETURN_IF_ERROR(ParseMoe(top, c));
  // Dense MLPs exist in the first_k_dense_replace layers, in layers moe_layer_freq skips, and in
  // every layer of a model without routed experts.
  bool has_dense_layer = c.n_routed_experts == 0;
  for (int64_t layer = 0; layer < c.num_hidden_layers && !has_dense_layer; ++layer) {
    has_dense_layer = !c.IsMoeLayer(layer);
  }
  EXPERTMESH_ASSIGN_OR_RETURN(c.intermediate_size, RangedInt(top, "intermediate_size", has_dense_layer ? 1 : 0,
                                                             kMaxDimension, has_dense_layer ? std::nullopt
                                                                                            : std::optional<int64_t>(0)));
  EXPERTMESH_RETURN_IF_ERROR(ParseRope(top, c));
  EXPERTMESH_ASSIGN_OR_RETURN(c.rms_norm_eps, top.Double("rms_norm_eps", 1e-6));
  if (!(c.rms_norm_eps > 0.0)) return FieldError("rms_norm_eps", absl::StrCat("must be > 0, got ", c.rms_norm_eps));
  EXPERTMESH_ASSIGN_OR_RETURN(c.tie_word_embeddings, top.Bool("tie_word_embeddings", false));
  EXPERTMESH_ASSIGN_OR_RETURN(c.num_nextn_predict_layers, RangedInt(top, "num_nextn_predict_layers", 0, kMaxLayers, 0));
  EXPERTMESH_ASSIGN_OR_RETURN(std::optional<std::string> activation, top.OptionalString("hidden_act"));
  if (activation && *activation != "silu") {
    return FieldError("hidden_act", absl::StrCat("'", *activation, "' is not supported (only \"silu\")"));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(bool mlp_bias, top.Bool("mlp_bias", false));
  if (mlp_bias) return FieldError("mlp_bias", "true is not supported (no checkpoint of the family has biases)");
  EXPERTMESH_RETURN_IF_ERROR(ParseQuantization(top, c));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::filesystem::path& config_json) {
  std::ifstream in(config_json, std::ios::binary);
  if (!in) {
    std::error_code error;
    const bool exists = std::filesystem::exists(config_json, error);
    return exists ? absl::PermissionDeniedError(absl::StrCat("cannot read ", config_json.string()))
                  : absl::NotFoundError(absl::StrCat(config_json.string(), " does not exist"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("reading ", config_json.string(), " failed"));
  absl::StatusOr<ModelConfig> config = FromJson(text.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat(config_json.string(), ": ", config.status().message()));
  }
  return config;
}

}  // namespace expertmesh
