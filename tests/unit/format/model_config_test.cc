// ModelConfig::FromJson/FromFile: the published DeepSeek configs and transformers 5.x fixture
// configs load with the right values; both rope layouts agree; every unsupported or contradictory
// field is rejected with INVALID_ARGUMENT naming it; harmless extra fields are ignored.
#include "engine/format/model_config.h"

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("EXPERTMESH_SOURCE_DIR");
  return dir != nullptr ? std::filesystem::path(dir) : std::filesystem::current_path();
}

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

const std::filesystem::path kV3 = "tests/fixtures/reference_configs/deepseek-v3-config.json";
const std::filesystem::path kV2Lite = "tests/fixtures/reference_configs/deepseek-v2-lite-config.json";

TEST(ModelConfigTest, LoadsPublishedDeepseekV3) {
  auto config = ModelConfig::FromFile(SourceDir() / kV3);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "deepseek_v3");
  EXPECT_EQ(config->vocab_size, 129280);
  EXPECT_EQ(config->hidden_size, 7168);
  EXPECT_EQ(config->num_hidden_layers, 61);
  EXPECT_EQ(config->q_lora_rank, 1536);
  EXPECT_EQ(config->kv_lora_rank, 512);
  EXPECT_EQ(config->qk_head_dim(), 192);
  EXPECT_EQ(config->n_routed_experts, 256);
  EXPECT_EQ(config->num_experts_per_tok, 8);
  EXPECT_EQ(config->first_k_dense_replace, 3);
  EXPECT_EQ(config->n_group, 8);
  EXPECT_EQ(config->topk_group, 4);
  EXPECT_EQ(config->topk_method, TopKMethod::kNoAuxTc);
  EXPECT_EQ(config->scoring_func, ScoringFunction::kSigmoid);
  EXPECT_TRUE(config->norm_topk_prob);
  EXPECT_DOUBLE_EQ(config->routed_scaling_factor, 2.5);
  ASSERT_TRUE(config->yarn.has_value());
  EXPECT_DOUBLE_EQ(config->yarn->factor, 40.0);
  EXPECT_EQ(config->yarn->original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(config->yarn->mscale_all_dim, 1.0);
  EXPECT_DOUBLE_EQ(config->rope_theta, 10000.0);
  EXPECT_TRUE(config->rope_interleave);
  EXPECT_TRUE(config->fp8_block_quantized);
  EXPECT_EQ(config->fp8_block_rows, 128);
  EXPECT_EQ(config->fp8_block_cols, 128);
  EXPECT_EQ(config->num_nextn_predict_layers, 1);
  EXPECT_FALSE(config->IsMoeLayer(2));
  EXPECT_TRUE(config->IsMoeLayer(3));
}

TEST(ModelConfigTest, LoadsPublishedDeepseekV2Lite) {
  auto config = ModelConfig::FromFile(SourceDir() / kV2Lite);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "deepseek_v2");
  EXPECT_FALSE(config->q_lora_rank.has_value());
  EXPECT_EQ(config->n_routed_experts, 64);
  EXPECT_EQ(config->n_shared_experts, 2);
  EXPECT_EQ(config->num_experts_per_tok, 6);
  EXPECT_EQ(config->topk_method, TopKMethod::kGreedy);
  EXPECT_EQ(config->scoring_func, ScoringFunction::kSoftmax);
  EXPECT_FALSE(config->norm_topk_prob);
  ASSERT_TRUE(config->yarn.has_value());
  EXPECT_DOUBLE_EQ(config->yarn->mscale, 0.707);
  EXPECT_DOUBLE_EQ(config->yarn->mscale_all_dim, 0.707);
  EXPECT_FALSE(config->fp8_block_quantized);
  EXPECT_EQ(config->num_nextn_predict_layers, 0);
}

TEST(ModelConfigTest, LoadsTransformers5FixtureConfigs) {
  for (const char* name : {"v3_tiny", "v3_tiny_fp8", "v2_lite_tiny", "v2_grouped_tiny"}) {
    auto config = ModelConfig::FromFile(SourceDir() / "tests/fixtures" / name / "config.json");
    ASSERT_TRUE(config.ok()) << name << ": " << config.status();
    ASSERT_TRUE(config->yarn.has_value()) << name;
    EXPECT_DOUBLE_EQ(config->yarn->factor, 4.0) << name;
    EXPECT_EQ(config->yarn->original_max_position_embeddings, 32) << name;
  }
  auto grouped = ModelConfig::FromFile(SourceDir() / "tests/fixtures/v2_grouped_tiny/config.json");
  EXPECT_EQ(grouped->topk_method, TopKMethod::kGroupLimitedGreedy);
  EXPECT_EQ(grouped->topk_group, 2);
  auto fp8 = ModelConfig::FromFile(SourceDir() / "tests/fixtures/v3_tiny_fp8/config.json");
  EXPECT_TRUE(fp8->fp8_block_quantized);
  // rope_parameters with rope_type "default": plain RoPE.
  auto prose = ModelConfig::FromFile(SourceDir() / "models/prose/config.json");
  ASSERT_TRUE(prose.ok()) << prose.status();
  EXPECT_FALSE(prose->yarn.has_value());
  EXPECT_DOUBLE_EQ(prose->rope_theta, 10000.0);
}

// The published layout converted to transformers 5.x's rope_parameters gives the same config.
TEST(ModelConfigTest, RopeParametersLayoutEqualsPublishedLayout) {
  nlohmann::json published = ReadJson(SourceDir() / kV3);
  published["rope_theta"] = 50000.0;
  nlohmann::json converted = published;
  nlohmann::json parameters = converted["rope_scaling"];
  parameters["rope_type"] = "yarn";
  parameters.erase("type");
  parameters["rope_theta"] = 50000.0;
  converted.erase("rope_scaling");
  converted.erase("rope_theta");
  converted["rope_parameters"] = parameters;
  auto a = ModelConfig::FromJson(published.dump());
  auto b = ModelConfig::FromJson(converted.dump());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_DOUBLE_EQ(b->rope_theta, 50000.0);
  EXPECT_DOUBLE_EQ(a->rope_theta, b->rope_theta);
  ASSERT_TRUE(a->yarn && b->yarn);
  EXPECT_EQ(a->yarn->factor, b->yarn->factor);
  EXPECT_EQ(a->yarn->original_max_position_embeddings, b->yarn->original_max_position_embeddings);
  EXPECT_EQ(a->yarn->mscale, b->yarn->mscale);
  EXPECT_EQ(a->yarn->mscale_all_dim, b->yarn->mscale_all_dim);
  EXPECT_EQ(a->yarn->beta_fast, b->yarn->beta_fast);
}

TEST(ModelConfigTest, ExtraFieldsThatDoNotChangeTheMathAreIgnored) {
  nlohmann::json config = ReadJson(SourceDir() / kV3);
  config["transformers_version"] = "5.17.0";
  config["dtype"] = "bfloat16";
  config["use_cache"] = true;
  config["initializer_range"] = 0.02;
  config["auto_map"] = {{"AutoConfig", "configuration_deepseek.DeepseekV3Config"}};
  config["ep_size"] = 1;
  config["rope_scaling"] = nullptr;  // null = plain RoPE
  auto parsed = ModelConfig::FromJson(config.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->yarn.has_value());
}

TEST(ModelConfigTest, DenseModelNeedsNoMoeFields) {
  nlohmann::json config = ReadJson(SourceDir() / kV2Lite);
  for (const char* key : {"n_routed_experts", "moe_intermediate_size", "num_experts_per_tok", "n_shared_experts",
                          "topk_method", "scoring_func", "norm_topk_prob", "first_k_dense_replace", "n_group",
                          "topk_group", "routed_scaling_factor"}) {
    config.erase(key);
  }
  auto parsed = ModelConfig::FromJson(config.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->n_routed_experts, 0);
  EXPECT_FALSE(parsed->IsMoeLayer(5));
}

struct BadConfig {
  std::string label;
  std::string base;   // "v3" or "v2"
  std::function<void(nlohmann::json&)> mutate;
  std::string expected_field;  // must appear in the message
};

class RejectsBadConfig : public ::testing::TestWithParam<BadConfig> {};

TEST_P(RejectsBadConfig, NamesTheField) {
  const BadConfig& bad = GetParam();
  nlohmann::json config = ReadJson(SourceDir() / (bad.base == "v3" ? kV3 : kV2Lite));
  bad.mutate(config);
  auto parsed = ModelConfig::FromJson(config.dump());
  ASSERT_FALSE(parsed.ok()) << bad.label << " was accepted";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_NE(parsed.status().message().find(bad.expected_field), std::string::npos)
      << bad.label << ": " << parsed.status();
}

using J = nlohmann::json;
INSTANTIATE_TEST_SUITE_P(
    Fields, RejectsBadConfig,
    ::testing::Values(
        BadConfig{"unknown_model_type", "v3", [](J& c) { c["model_type"] = "llama"; }, "model_type"},
        BadConfig{"missing_model_type", "v3", [](J& c) { c.erase("model_type"); }, "model_type"},
        BadConfig{"scoring_func_foo", "v3", [](J& c) { c["scoring_func"] = "foo"; }, "scoring_func"},
        BadConfig{"v3_softmax", "v3", [](J& c) { c["scoring_func"] = "softmax"; }, "scoring_func"},
        BadConfig{"v3_greedy", "v3", [](J& c) { c["topk_method"] = "greedy"; }, "topk_method"},
        BadConfig{"v2_sigmoid", "v2", [](J& c) { c["scoring_func"] = "sigmoid"; }, "scoring_func"},
        BadConfig{"v2_noaux_tc", "v2", [](J& c) { c["topk_method"] = "noaux_tc"; }, "topk_method"},
        BadConfig{"unknown_topk_method", "v2", [](J& c) { c["topk_method"] = "best"; }, "topk_method"},
        BadConfig{"v2_norm_topk_prob", "v2", [](J& c) { c["norm_topk_prob"] = true; }, "norm_topk_prob"},
        BadConfig{"rope_dynamic", "v3", [](J& c) { c["rope_scaling"]["type"] = "dynamic"; }, "rope_scaling.type"},
        BadConfig{"rope_parameters_linear", "v3",
                  [](J& c) { c.erase("rope_scaling"); c["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 2.0}}; },
                  "rope_parameters.rope_type"},
        BadConfig{"rope_type_and_type_disagree", "v3", [](J& c) { c["rope_scaling"]["rope_type"] = "default"; },
                  "rope_scaling"},
        BadConfig{"rope_unknown_key", "v3", [](J& c) { c["rope_scaling"]["attention_factor"] = 1.2; },
                  "rope_scaling.attention_factor"},
        BadConfig{"rope_truncate_false", "v3", [](J& c) { c["rope_scaling"]["truncate"] = false; },
                  "rope_scaling.truncate"},
        BadConfig{"yarn_without_factor", "v3", [](J& c) { c["rope_scaling"].erase("factor"); }, "rope_scaling.factor"},
        BadConfig{"yarn_factor_below_one", "v3", [](J& c) { c["rope_scaling"]["factor"] = 0.5; }, "rope_scaling.factor"},
        BadConfig{"rope_layouts_disagree", "v3",
                  [](J& c) {
                    J p = c["rope_scaling"];
                    p["factor"] = 8;
                    c["rope_parameters"] = p;
                  },
                  "rope_parameters"},
        BadConfig{"rope_theta_disagree", "v3",
                  [](J& c) { c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500.0}}; c.erase("rope_scaling"); },
                  "rope_parameters.rope_theta"},
        BadConfig{"rope_theta_not_positive", "v3", [](J& c) { c["rope_theta"] = -1; }, "rope_theta"},
        BadConfig{"negative_hidden_size", "v3", [](J& c) { c["hidden_size"] = -7168; }, "hidden_size"},
        BadConfig{"zero_layers", "v3", [](J& c) { c["num_hidden_layers"] = 0; }, "num_hidden_layers"},
        BadConfig{"huge_vocab", "v3", [](J& c) { c["vocab_size"] = 1e15; }, "vocab_size"},
        BadConfig{"huge_unsigned", "v3", [](J& c) { c["hidden_size"] = 18446744073709551615ull; }, "hidden_size"},
        BadConfig{"negative_kv_lora_rank", "v3", [](J& c) { c["kv_lora_rank"] = -1; }, "kv_lora_rank"},
        BadConfig{"odd_rope_dim", "v3", [](J& c) { c["qk_rope_head_dim"] = 63; }, "qk_rope_head_dim"},
        BadConfig{"topk_group_above_n_group", "v3", [](J& c) { c["topk_group"] = 9; }, "topk_group"},
        BadConfig{"experts_per_token_above_experts", "v2", [](J& c) { c["num_experts_per_tok"] = 65; },
                  "num_experts_per_tok"},
        BadConfig{"experts_per_token_above_kept_groups", "v3", [](J& c) { c["topk_group"] = 1; c["num_experts_per_tok"] = 33; },
                  "num_experts_per_tok"},
        BadConfig{"experts_not_divisible_by_groups", "v3", [](J& c) { c["n_group"] = 7; }, "n_group"},
        BadConfig{"attention_bias_true", "v3", [](J& c) { c["attention_bias"] = true; }, "attention_bias"},
        BadConfig{"mlp_bias_true", "v3", [](J& c) { c["mlp_bias"] = true; }, "mlp_bias"},
        BadConfig{"hidden_act_gelu", "v3", [](J& c) { c["hidden_act"] = "gelu"; }, "hidden_act"},
        BadConfig{"kv_heads_differ", "v3", [](J& c) { c["num_key_value_heads"] = 8; }, "num_key_value_heads"},
        BadConfig{"head_dim_differs", "v3", [](J& c) { c["head_dim"] = 128; }, "head_dim"},
        BadConfig{"qk_head_dim_differs", "v3", [](J& c) { c["qk_head_dim"] = 128; }, "qk_head_dim"},
        BadConfig{"v2_rope_not_interleaved", "v2", [](J& c) { c["rope_interleave"] = false; }, "rope_interleave"},
        BadConfig{"string_for_int", "v3", [](J& c) { c["hidden_size"] = "7168"; }, "hidden_size"},
        BadConfig{"float_for_int", "v3", [](J& c) { c["moe_intermediate_size"] = 2048.5; }, "moe_intermediate_size"},
        BadConfig{"string_for_bool", "v3", [](J& c) { c["norm_topk_prob"] = "true"; }, "norm_topk_prob"},
        BadConfig{"number_for_string", "v3", [](J& c) { c["topk_method"] = 3; }, "topk_method"},
        BadConfig{"string_for_double", "v3", [](J& c) { c["routed_scaling_factor"] = "2.5"; }, "routed_scaling_factor"},
        BadConfig{"q_lora_rank_float", "v3", [](J& c) { c["q_lora_rank"] = 1.5; }, "q_lora_rank"},
        BadConfig{"q_lora_rank_missing", "v3", [](J& c) { c.erase("q_lora_rank"); }, "q_lora_rank"},
        BadConfig{"rope_scaling_array", "v3", [](J& c) { c["rope_scaling"] = J::array({1, 2}); }, "rope_scaling"},
        BadConfig{"moe_field_missing", "v3", [](J& c) { c.erase("moe_intermediate_size"); }, "moe_intermediate_size"},
        BadConfig{"n_group_missing", "v3", [](J& c) { c.erase("n_group"); }, "n_group"},
        BadConfig{"routed_scaling_missing", "v3", [](J& c) { c.erase("routed_scaling_factor"); },
                  "routed_scaling_factor"},
        BadConfig{"shared_experts_missing", "v3", [](J& c) { c.erase("n_shared_experts"); }, "n_shared_experts"},
        BadConfig{"first_dense_beyond_layers", "v3", [](J& c) { c["first_k_dense_replace"] = 62; },
                  "first_k_dense_replace"},
        BadConfig{"zero_routed_scaling", "v3", [](J& c) { c["routed_scaling_factor"] = 0; }, "routed_scaling_factor"},
        BadConfig{"quant_method_gptq", "v3", [](J& c) { c["quantization_config"]["quant_method"] = "gptq"; },
                  "quantization_config.quant_method"},
        BadConfig{"quant_fmt_e5m2", "v3", [](J& c) { c["quantization_config"]["fmt"] = "e5m2"; }, "quantization_config.fmt"},
        BadConfig{"quant_block_size_bad", "v3", [](J& c) { c["quantization_config"]["weight_block_size"] = {128}; },
                  "quantization_config.weight_block_size"},
        BadConfig{"quant_block_size_zero", "v3", [](J& c) { c["quantization_config"]["weight_block_size"] = {0, 128}; },
                  "quantization_config.weight_block_size"},
        BadConfig{"rms_norm_eps_negative", "v3", [](J& c) { c["rms_norm_eps"] = -1e-6; }, "rms_norm_eps"}),
    [](const ::testing::TestParamInfo<BadConfig>& info) { return info.param.label; });

TEST(ModelConfigTest, RejectsNonJsonAndNonObjects) {
  auto not_json = ModelConfig::FromJson("{\"model_type\": \"deepseek_v3\",");
  EXPECT_EQ(not_json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(not_json.status().message().find("not valid JSON"), std::string::npos) << not_json.status();
  auto array = ModelConfig::FromJson("[1, 2]");
  EXPECT_EQ(array.status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = ModelConfig::FromJson("");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelConfigTest, FromFileNamesThePath) {
  const std::filesystem::path missing = std::filesystem::temp_directory_path() / "expertmesh_no_such_dir/config.json";
  auto result = ModelConfig::FromFile(missing);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(result.status().message().find(missing.string()), std::string::npos) << result.status();

  const std::filesystem::path bad = std::filesystem::temp_directory_path() / "expertmesh_bad_config.json";
  {
    std::ofstream out(bad);
    out << R"({"model_type": "deepseek_v3", "vocab_size": -1})";
  }
  result = ModelConfig::FromFile(bad);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find(bad.string()), std::string::npos) << result.status();
  EXPECT_NE(result.status().message().find("vocab_size"), std::string::npos) << result.status();
  std::filesystem::remove(bad);
}

}  // namespace
}  // namespace expertmesh
