// Recipe: what one Assembly-of-Experts merge is — parents (name -> checkpoint), a weight lambda
// per parent, the base parent, the difference threshold delta, which tensors are merged (globs)
// and the dtype merged tensors are stored in. Parsed from JSON (docs/blends.md defines the format);
// services build it from their own protos and call ValidateRecipe.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/dtype.h"

namespace expertmesh {

// The Chimera (R1T) default: routed experts only.
inline constexpr std::string_view kRoutedExpertsGlob = "model.layers.*.mlp.experts.*";

struct RecipeParent {
  std::string name;
  std::filesystem::path checkpoint;  // checkpoint directory
  double lambda = 0.0;               // weight in W = sum_i lambda_i W_i (used as float32)
};

struct Recipe {
  std::string name;
  std::vector<RecipeParent> parents;  // summation order is this order
  std::string base_parent;            // supplies every unmerged and delta-kept tensor
  double delta = 0.0;                 // keep base tensor when max relative distance < delta
  std::vector<std::string> merge_globs{std::string(kRoutedExpertsGlob)};
  DType output_dtype = DType::kBF16;  // merged tensors: kBF16 or kF32 (f32 base tensors stay f32)

  // Index of `parent_name` in parents, or -1.
  int ParentIndex(std::string_view parent_name) const;
  int BaseIndex() const { return ParentIndex(base_parent); }
  double LambdaSum() const;
};

// Checks the recipe on its own (no checkpoints): at least one parent, unique non-empty names,
// known base parent, finite lambdas, finite delta >= 0, non-empty globs, bf16/f32 output.
// INVALID_ARGUMENT names the problem.
absl::Status ValidateRecipe(const Recipe& recipe);

// Parses the JSON recipe format; relative checkpoint paths are resolved against `relative_to`
// (the recipe file's directory). The result is validated. Unknown keys are errors.
absl::StatusOr<Recipe> ParseRecipeJson(std::string_view json_text, const std::filesystem::path& relative_to);
absl::StatusOr<Recipe> LoadRecipeFile(const std::filesystem::path& path);

// The recipe as JSON in the same format (absolute paths), for merge reports.
std::string RecipeToJson(const Recipe& recipe);

}  // namespace expertmesh
