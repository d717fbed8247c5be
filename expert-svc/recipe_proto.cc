// BlendRecipe <-> Recipe.
#include "expert-svc/recipe_proto.h"

#include "absl/strings/str_cat.h"

namespace expertmesh {

absl::StatusOr<Recipe> RecipeFromProto(const v1::BlendRecipe& proto) {
  Recipe recipe;
  recipe.name = proto.name();
  for (const v1::RecipeParent& parent : proto.parents()) {
    recipe.parents.push_back({parent.name(), parent.checkpoint(), parent.lambda()});
  }
  recipe.base_parent = proto.base();
  recipe.delta = proto.delta();
  if (proto.merge_size() > 0) recipe.merge_globs.assign(proto.merge().begin(), proto.merge().end());
  if (proto.output_dtype().empty() || proto.output_dtype() == "bf16") {
    recipe.output_dtype = DType::kBF16;
  } else if (proto.output_dtype() == "f32") {
    recipe.output_dtype = DType::kF32;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("recipe: output_dtype must be \"bf16\" or \"f32\", got \"", proto.output_dtype(), "\""));
  }
  return recipe;
}

v1::BlendRecipe RecipeToProto(const Recipe& recipe) {
  v1::BlendRecipe proto;
  proto.set_name(recipe.name);
  for (const RecipeParent& parent : recipe.parents) {
    v1::RecipeParent* entry = proto.add_parents();
    entry->set_name(parent.name);
    entry->set_lambda(parent.lambda);
    entry->set_checkpoint(parent.checkpoint.string());
  }
  proto.set_base(recipe.base_parent);
  proto.set_delta(recipe.delta);
  for (const std::string& glob : recipe.merge_globs) proto.add_merge(glob);
  proto.set_output_dtype(recipe.output_dtype == DType::kF32 ? "f32" : "bf16");
  return proto;
}

}  // namespace expertmesh
