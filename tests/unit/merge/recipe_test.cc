// Recipe parsing and validation (every malformed-recipe case is INVALID_ARGUMENT naming the
// problem) and tensor-name globs.
#include "engine/merge/recipe.h"

#include <cmath>
#include <fstream>
#include <limits>

#include "engine/merge/tensor_glob.h"
#include "gtest/gtest.h"

namespace expertmesh {
namespace {

constexpr char kGood[] = R"({
  "name": "prose-code-30",
  "parents": {"prose": "models/prose", "code": "/abs/code"},
  "lambdas": {"code": 0.3, "prose": 0.7},
  "base": "prose",
  "delta": 0.01,
  "merge": ["model.layers.*.mlp.experts.*", "lm_head.weight"],
  "output_dtype": "f32"
})";

TEST(RecipeTest, ParsesEveryField) {
  auto recipe = ParseRecipeJson(kGood, "/repo");
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->name, "prose-code-30");
  ASSERT_EQ(recipe->parents.size(), 2u);
  EXPECT_EQ(recipe->parents[0].name, "prose");  // file order, not key order
  EXPECT_EQ(recipe->parents[0].checkpoint, std::filesystem::path("/repo/models/prose"));
  EXPECT_DOUBLE_EQ(recipe->parents[0].lambda, 0.7);
  EXPECT_EQ(recipe->parents[1].checkpoint, std::filesystem::path("/abs/code"));
  EXPECT_DOUBLE_EQ(recipe->parents[1].lambda, 0.3);
  EXPECT_EQ(recipe->base_parent, "prose");
  EXPECT_EQ(recipe->BaseIndex(), 0);
  EXPECT_DOUBLE_EQ(recipe->delta, 0.01);
  EXPECT_EQ(recipe->merge_globs, (std::vector<std::string>{"model.layers.*.mlp.experts.*", "lm_head.weight"}));
  EXPECT_EQ(recipe->output_dtype, DType::kF32);
}

TEST(RecipeTest, DefaultsAndListLambdas) {
  auto recipe = ParseRecipeJson(R"({"name": "x", "parents": {"a": "/a", "b": "/b", "c": "/c"},
                                    "lambdas": [0.5, 0.75, -0.25], "base": "b"})", "/");
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->merge_globs, std::vector<std::string>{"model.layers.*.mlp.experts.*"});
  EXPECT_EQ(recipe->output_dtype, DType::kBF16);
  EXPECT_EQ(recipe->delta, 0.0);
  EXPECT_DOUBLE_EQ(recipe->parents[2].lambda, -0.25);  // extrapolation is allowed
  EXPECT_DOUBLE_EQ(recipe->LambdaSum(), 1.0);
  // Lambdas need not sum to 1 (AoE allows any weights).
  EXPECT_TRUE(ParseRecipeJson(R"({"name": "x", "parents": {"a": "/a", "b": "/b"}, "lambdas": [1, 1],
                                   "base": "a", "merge": "*"})", "/").ok());
}

TEST(RecipeTest, RoundTripsThroughJson) {
  auto recipe = ParseRecipeJson(kGood, "/repo");
  ASSERT_TRUE(recipe.ok());
  auto again = ParseRecipeJson(RecipeToJson(*recipe), "/elsewhere");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->parents[0].checkpoint, recipe->parents[0].checkpoint);
  EXPECT_EQ(again->parents[1].lambda, recipe->parents[1].lambda);
  EXPECT_EQ(again->merge_globs, recipe->merge_globs);
  EXPECT_EQ(again->delta, recipe->delta);
  EXPECT_EQ(again->output_dtype, recipe->output_dtype);
}

struct BadCase {
  const char* json;
  const char* message_part;
};

class MalformedRecipeTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(MalformedRecipeTest, IsInvalidArgumentNamingTheProblem) {
  auto recipe = ParseRecipeJson(GetParam().json, "/");
  ASSERT_FALSE(recipe.ok()) << GetParam().json;
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(recipe.status().message().find(GetParam().message_part), std::string::npos) << recipe.status();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MalformedRecipeTest,
    ::testing::Values(
        BadCase{"{not json", "not valid JSON"}, BadCase{"[1, 2]", "JSON object"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1], "base": "a", "lamdbas": 1})",
                "unknown key \"lamdbas\""},
        BadCase{R"({"parents": {"a": "/a"}, "lambdas": [1], "base": "a"})", "\"name\""},
        BadCase{R"({"name": "", "parents": {"a": "/a"}, "lambdas": [1], "base": "a"})", "\"name\" is empty"},
        BadCase{R"({"name": "x", "parents": {}, "lambdas": [], "base": "a"})", "no parents"},
        BadCase{R"({"name": "x", "lambdas": [1], "base": "a"})", "\"parents\""},
        BadCase{R"({"name": "x", "parents": {"a": 3}, "lambdas": [1], "base": "a"})", "path string"},
        BadCase{R"({"name": "x", "parents": {"a": ""}, "lambdas": [1], "base": "a"})", "no checkpoint path"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "base": "a"})", "\"lambdas\" is required"},
        BadCase{R"({"name": "x", "parents": {"a": "/a", "b": "/b"}, "lambdas": [1], "base": "a"})",
                "1 values for 2 parents"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": {"a": 1, "z": 0}, "base": "a"})",
                "unknown parent 'z'"},
        BadCase{R"({"name": "x", "parents": {"a": "/a", "b": "/b"}, "lambdas": {"a": 1}, "base": "a"})",
                "1 values for 2 parents"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": {"a": "0.5"}, "base": "a"})", "must be a number"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [NaN], "base": "a"})", "not valid JSON"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1e999], "base": "a"})", "not valid JSON"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1]})", "\"base\""},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1], "base": "b"})",
                "base parent 'b' is not one of the parents (a)"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1], "base": "a", "delta": -0.1})",
                "delta must be a finite number >= 0"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1], "base": "a", "delta": "0"})",
                "\"delta\" must be a number"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1], "base": "a", "merge": []})",
                "empty glob list"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1], "base": "a", "merge": [""]})", "empty glob"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1], "base": "a", "merge": [3]})",
                "must be strings"},
        BadCase{R"({"name": "x", "parents": {"a": "/a"}, "lambdas": [1], "base": "a", "output_dtype": "fp8"})",
                "\"output_dtype\" must be"}));

TEST(RecipeTest, ValidateRejectsProgrammaticMistakes) {
  Recipe recipe;
  recipe.name = "live";
  recipe.parents = {{"a", "/a", 0.5}, {"b", "/b", 0.5}};
  recipe.base_parent = "a";
  EXPECT_TRUE(ValidateRecipe(recipe).ok());

  Recipe nan_lambda = recipe;
  nan_lambda.parents[1].lambda = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(ValidateRecipe(nan_lambda).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ValidateRecipe(nan_lambda).message().find("parent 'b' is not finite"), std::string::npos);

  Recipe duplicate = recipe;
  duplicate.parents[1].name = "a";
  EXPECT_NE(ValidateRecipe(duplicate).message().find("appears twice"), std::string::npos);

  Recipe empty = recipe;
  empty.parents.clear();
  EXPECT_EQ(ValidateRecipe(empty).code(), absl::StatusCode::kInvalidArgument);

  Recipe nan_delta = recipe;
  nan_delta.delta = std::nan("");
  EXPECT_EQ(ValidateRecipe(nan_delta).code(), absl::StatusCode::kInvalidArgument);

  Recipe fp8_output = recipe;
  fp8_output.output_dtype = DType::kF8E4M3;
  EXPECT_EQ(ValidateRecipe(fp8_output).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RecipeTest, LoadRecipeFileResolvesPathsAgainstItsDirectoryAndNamesTheFile) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "expertmesh-recipe-test";
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "good.json") << R"({"name": "x", "parents": {"a": "../m/a"}, "lambdas": [1], "base": "a"})";
    std::ofstream(dir / "bad.json") << R"({"name": "x", "parents": {"a": "m"}, "lambdas": [1], "base": "q"})";
  }
  auto good = LoadRecipeFile(dir / "good.json");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->parents[0].checkpoint, (dir.parent_path() / "m" / "a").lexically_normal());
  auto bad = LoadRecipeFile(dir / "bad.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("bad.json"), std::string::npos);
  EXPECT_EQ(LoadRecipeFile(dir / "missing.json").status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(TensorGlobTest, MatchesLikeShellGlobsAcrossDots) {
  EXPECT_TRUE(GlobMatches("model.layers.*.mlp.experts.*", "model.layers.3.mlp.experts.7.down_proj.weight"));
  EXPECT_FALSE(GlobMatches("model.layers.*.mlp.experts.*", "model.layers.3.mlp.shared_experts.down_proj.weight"));
  EXPECT_FALSE(GlobMatches("model.layers.*.mlp.experts.*", "model.layers.3.mlp.gate.weight"));
  EXPECT_TRUE(GlobMatches("*", "lm_head.weight"));
  EXPECT_TRUE(GlobMatches("*", ""));
  EXPECT_TRUE(GlobMatches("lm_head.weight", "lm_head.weight"));
  EXPECT_FALSE(GlobMatches("lm_head.weight", "lm_head.weights"));
  EXPECT_TRUE(GlobMatches("model.layers.?.self_attn.*", "model.layers.1.self_attn.o_proj.weight"));
  EXPECT_FALSE(GlobMatches("model.layers.?.self_attn.*", "model.layers.12.self_attn.o_proj.weight"));
  EXPECT_TRUE(GlobMatches("*experts.1*", "model.layers.1.mlp.experts.12.up_proj.weight"));
  EXPECT_TRUE(GlobMatches("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(GlobMatches("a*b*c", "aXbYbZ"));
  EXPECT_TRUE(GlobMatches("**.weight", "x.weight"));
}

}  // namespace
}  // namespace expertmesh
