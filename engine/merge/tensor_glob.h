// Tensor-name globs for merge recipes: `*` matches any run of characters (dots included), `?`
// exactly one character, everything else itself. "model.layers.*.mlp.experts.*" selects every
// routed-expert tensor; "*" selects every tensor.
#pragma once

#include <string_view>

namespace expertmesh {

bool GlobMatches(std::string_view pattern, std::string_view text);

}  // namespace expertmesh
