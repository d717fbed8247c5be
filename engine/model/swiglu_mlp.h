// The SwiGLU feed-forward used by dense layers, shared experts and routed experts:
// down_proj(silu(gate_proj(x)) * up_proj(x)).
#pragma once

#include <cstdint>
#include <span>

#include "engine/model/model_weights.h"
#include "engine/ops/compute_backend.h"

namespace expertmesh {

// output[rows, hidden] = MLP(x[rows, hidden]) (+ output when accumulate).
void ApplySwiGluMlp(const ops::ComputeBackend& backend, const MlpWeights& mlp, std::span<const float> x,
                    int64_t rows, std::span<float> output, bool accumulate = false);

}  // namespace expertmesh
