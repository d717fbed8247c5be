// GpuModelWeights: a DeepSeek-V2/V3 model's non-expert weights on the device (everything in
// ModelWeights), matrices in the serving element type (bf16, or float32 for the fidelity mode),
// norms, router weights and biases in float32; gate_proj and up_proj of dense MLPs and shared
// experts fused into one [2I, H] matrix so each SwiGLU takes one GEMM for both halves.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/model_config.h"
#include "engine/model/model_weights.h"
#include "engine/ops/cuda/cublas_gemm.h"
#include "engine/ops/cuda/cuda_device.h"

namespace expertmesh {

// One matrix on the device: [rows, cols] row-major in `type`.
struct DeviceMatrix {
  cuda::DeviceBuffer data;
  cuda::ElementType type = cuda::ElementType::kF32;
  int64_t rows = 0, cols = 0;
};

struct DeviceMlp {
  DeviceMatrix gate_up;  // [2I, H]
  DeviceMatrix down;     // [H, I]
  int64_t intermediate = 0;
};

struct DeviceLayer {
  DeviceMatrix input_layernorm, post_attention_layernorm;  // float32 [H]
  DeviceMatrix q_proj, q_a_proj, q_a_layernorm, q_b_proj;
  DeviceMatrix kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj;
  std::optional<DeviceMlp> dense_mlp;
  DeviceMatrix gate, gate_bias;  // float32 router [E, H] and e_score_correction_bias [E] (may be empty)
  std::optional<DeviceMlp> shared_experts;
};

struct GpuModelWeights {
  DeviceMatrix embed_tokens;  // [vocab, H]
  std::vector<DeviceLayer> layers;
  DeviceMatrix norm;          // float32 [H]
  DeviceMatrix lm_head;       // [vocab, H]
  uint64_t ByteSize() const;
};

// Uploads validated host weights; `type` is the matrices' element type.
absl::StatusOr<GpuModelWeights> UploadModelWeights(const ModelConfig& config, const ModelWeights& weights,
                                                   cuda::ElementType type);

}  // namespace expertmesh
