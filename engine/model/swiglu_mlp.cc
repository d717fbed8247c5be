// ApplySwiGluMlp.
#include "engine/model/swiglu_mlp.h"

#include <vector>

namespace expertmesh {

void ApplySwiGluMlp(const ops::ComputeBackend& backend, const MlpWeights& mlp, std::span<const float> x,
                    int64_t rows, std::span<float> output, bool accumulate) {
  const int64_t intermediate = mlp.gate_proj.dim(0);
  const int64_t hidden = mlp.gate_proj.dim(1);
  std::vector<float> gate(rows * intermediate), up(rows * intermediate);
  backend.Linear(x, rows, hidden, mlp.gate_proj.values(), intermediate, gate);
  backend.Linear(x, rows, hidden, mlp.up_proj.values(), intermediate, up);
  backend.SiluMultiply(gate, up, gate);
  backend.Linear(gate, rows, intermediate, mlp.down_proj.values(), hidden, output, accumulate);
}

}  // namespace expertmesh
