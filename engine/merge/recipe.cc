// Recipe parsing (nlohmann::ordered_json, so parent order in the file is the summation order)
// and validation.
#include "engine/merge/recipe.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

using Json = nlohmann::ordered_json;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("recipe: ", what));
}

absl::StatusOr<double> ParseNumber(const Json& value, const std::string& what) {
  if (!value.is_number()) return Invalid(absl::StrCat(what, " must be a number, got ", value.dump()));
  return value.get<double>();
}

absl::StatusOr<std::vector<std::string>> ParseGlobs(const Json& value) {
  std::vector<std::string> globs;
  if (value.is_string()) {
    globs.push_back(value.get<std::string>());
  } else if (value.is_array()) {
    for (const Json& item : value) {
      if (!item.is_string()) return Invalid(absl::StrCat("\"merge\" entries must be strings, got ", item.dump()));
      globs.push_back(item.get<std::string>());
    }
  } else {
    return Invalid("\"merge\" must be a glob string or a list of globs");
  }
  return globs;
}

absl::Status ParseLambdas(const Json& value, Recipe& recipe) {
  if (value.is_array()) {
    if (value.size() != recipe.parents.size()) {
      return Invalid(absl::StrCat("\"lambdas\" has ", value.size(), " values for ", recipe.parents.size(), " parents"));
    }
    for (size_t i = 0; i < value.size(); ++i) {
      EXPERTMESH_ASSIGN_OR_RETURN(recipe.parents[i].lambda,
                                  ParseNumber(value[i], absl::StrCat("lambda of parent '", recipe.parents[i].name, "'")));
    }
    return absl::OkStatus();
  }
  if (!value.is_object()) return Invalid("\"lambdas\" must be an object {parent: lambda} or a list");
  for (const auto& [key, item] : value.items()) {
    if (recipe.ParentIndex(key) < 0) return Invalid(absl::StrCat("\"lambdas\" names unknown parent '", key, "'"));
  }
  if (value.size() != recipe.parents.size()) {
    return Invalid(absl::StrCat("\"lambdas\" has ", value.size(), " values for ", recipe.parents.size(), " parents"));
  }
  for (RecipeParent& parent : recipe.parents) {
    auto found = value.find(parent.name);
    if (found == value.end()) return Invalid(absl::StrCat("\"lambdas\" has no value for parent '", parent.name, "'"));
    EXPERTMESH_ASSIGN_OR_RETURN(parent.lambda, ParseNumber(*found, absl::StrCat("lambda of parent '", parent.name, "'")));
  }
  return absl::OkStatus();
}

}  // namespace

int Recipe::ParentIndex(std::string_view parent_name) const {
  for (size_t i = 0; i < parents.size(); ++i) {
    if (parents[i].name == parent_name) return static_cast<int>(i);
  }
  return -1;
}

double Recipe::LambdaSum() const {
  double sum = 0.0;
  for (const RecipeParent& parent : parents) sum += parent.lambda;
  return sum;
}

absl::Status ValidateRecipe(const Recipe& recipe) {
  if (recipe.name.empty()) return Invalid("\"name\" is empty");
  if (recipe.parents.empty()) return Invalid("no parents");
  std::set<std::string> seen;
  for (const RecipeParent& parent : recipe.parents) {
    if (parent.name.empty()) return Invalid("a parent has an empty name");
    if (!seen.insert(parent.name).second) return Invalid(absl::StrCat("parent '", parent.name, "' appears twice"));
    if (parent.checkpoint.empty()) return Invalid(absl::StrCat("parent '", parent.name, "' has no checkpoint path"));
    if (!std::isfinite(parent.lambda)) {
      return Invalid(absl::StrCat("lambda of parent '", parent.name, "' is not finite (", parent.lambda, ")"));
    }
  }
  if (recipe.base_parent.empty()) return Invalid("\"base\" parent is not set");
  if (recipe.BaseIndex() < 0) {
    std::vector<std::string> names;
    for (const RecipeParent& parent : recipe.parents) names.push_back(parent.name);
    return Invalid(absl::StrCat("base parent '", recipe.base_parent, "' is not one of the parents (",
                                absl::StrJoin(names, ", "), ")"));
  }
  if (!std::isfinite(recipe.delta) || recipe.delta < 0.0) {
    return Invalid(absl::StrCat("delta must be a finite number >= 0, got ", recipe.delta));
  }
  if (recipe.merge_globs.empty()) return Invalid("\"merge\" selects no tensors (empty glob list)");
  for (const std::string& glob : recipe.merge_globs) {
    if (glob.empty()) return Invalid("\"merge\" has an empty glob");
  }
  if (recipe.output_dtype != DType::kBF16 && recipe.output_dtype != DType::kF32) {
    return Invalid(absl::StrCat("output dtype must be bf16 or f32, got ", std::string(DTypeName(recipe.output_dtype))));
  }
  return absl::OkStatus();
}

absl::StatusOr<Recipe> ParseRecipeJson(std::string_view json_text, const std::filesystem::path& relative_to) {
  Json json;
  try {
    json = Json::parse(json_text);
  } catch (const Json::exception& error) {  // parse or number-overflow errors; none leaves the module
    return Invalid(absl::StrCat("not valid JSON (", error.what(), ")"));
  }
  if (!json.is_object()) return Invalid("top level must be a JSON object");
  static const std::set<std::string> kKeys = {"name", "parents", "lambdas", "base", "delta", "merge", "output_dtype"};
  for (const auto& [key, value] : json.items()) {
    if (!kKeys.count(key)) return Invalid(absl::StrCat("unknown key \"", key, "\""));
  }
  Recipe recipe;
  if (!json.contains("name") || !json["name"].is_string()) return Invalid("\"name\" (string) is required");
  recipe.name = json["name"].get<std::string>();

  if (!json.contains("parents") || !json["parents"].is_object()) {
    return Invalid("\"parents\" (object {name: checkpoint directory}) is required");
  }
  for (const auto& [name, path] : json["parents"].items()) {
    if (!path.is_string()) return Invalid(absl::StrCat("checkpoint of parent '", name, "' must be a path string"));
    std::filesystem::path checkpoint = path.get<std::string>();
    if (checkpoint.is_relative() && !checkpoint.empty()) checkpoint = relative_to / checkpoint;
    recipe.parents.push_back({name, checkpoint.lexically_normal(), 0.0});
  }
  if (recipe.parents.empty()) return Invalid("no parents");

  if (!json.contains("lambdas")) return Invalid("\"lambdas\" is required");
  EXPERTMESH_RETURN_IF_ERROR(ParseLambdas(json["lambdas"], recipe));

  if (!json.contains("base") || !json["base"].is_string()) return Invalid("\"base\" (parent name) is required");
  recipe.base_parent = json["base"].get<std::string>();
  if (json.contains("delta")) {
    EXPERTMESH_ASSIGN_OR_RETURN(recipe.delta, ParseNumber(json["delta"], "\"delta\""));
  }
  if (json.contains("merge")) {
    EXPERTMESH_ASSIGN_OR_RETURN(recipe.merge_globs, ParseGlobs(json["merge"]));
  }
  if (json.contains("output_dtype")) {
    const Json& dtype = json["output_dtype"];
    if (dtype == "bf16") {
      recipe.output_dtype = DType::kBF16;
    } else if (dtype == "f32") {
      recipe.output_dtype = DType::kF32;
    } else {
      return Invalid(absl::StrCat("\"output_dtype\" must be \"bf16\" or \"f32\", got ", dtype.dump()));
    }
  }
  EXPERTMESH_RETURN_IF_ERROR(ValidateRecipe(recipe));
  return recipe;
}

absl::StatusOr<Recipe> LoadRecipeFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read recipe ", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<Recipe> recipe = ParseRecipeJson(text.str(), std::filesystem::absolute(path).parent_path());
  if (!recipe.ok()) {
    return absl::Status(recipe.status().code(), absl::StrCat(path.string(), ": ", recipe.status().message()));
  }
  return recipe;
}

std::string RecipeToJson(const Recipe& recipe) {
  Json json;
  json["name"] = recipe.name;
  json["parents"] = Json::object();
  json["lambdas"] = Json::object();
  for (const RecipeParent& parent : recipe.parents) {
    json["parents"][parent.name] = std::filesystem::absolute(parent.checkpoint).lexically_normal().string();
    json["lambdas"][parent.name] = parent.lambda;
  }
  json["base"] = recipe.base_parent;
  json["delta"] = recipe.delta;
  json["merge"] = recipe.merge_globs;
  json["output_dtype"] = recipe.output_dtype == DType::kF32 ? "f32" : "bf16";
  return json.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace expertmesh
