// Conversions between the admin API's protos (admin_service.proto) and the engine's types:
// BlendRecipe <-> Recipe, and a shard's weight-set statuses -> WeightSetStatus /
// ListWeightSetsResponse. Shared by expert-svc's admin service, router-svc and expertmesh-admin.
#pragma once

#include "absl/status/statusor.h"
#include "engine/merge/recipe.h"
#include "expertmesh/v1/admin_service.pb.h"

namespace expertmesh {

// The recipe in `proto`; parents' checkpoints may be empty. Not validated beyond the dtype
// (INVALID_ARGUMENT for an output_dtype other than "", "bf16", "f32"); an empty merge list means
// the routed experts.
absl::StatusOr<Recipe> RecipeFromProto(const v1::BlendRecipe& proto);
v1::BlendRecipe RecipeToProto(const Recipe& recipe);

}  // namespace expertmesh
