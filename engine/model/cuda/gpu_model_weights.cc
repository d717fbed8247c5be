// UploadModelWeights: float32 host tensors -> device matrices (bf16 conversion on the device).
#include "engine/model/cuda/gpu_model_weights.h"

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/ops/cuda/moe_kernels.h"

namespace expertmesh {
namespace {

using cuda::DeviceBuffer;
using cuda::ElementType;

// Uploads `count` floats from each of `parts` back to back as one [rows, cols] matrix.
absl::StatusOr<DeviceMatrix> Upload(std::vector<const Tensor*> parts, int64_t rows, int64_t cols, ElementType type) {
  DeviceMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  const int64_t count = rows * cols;
  if (count == 0) return m;
  int64_t total = 0;
  for (const Tensor* t : parts) total += t->size();
  if (total != count) {
    return absl::InvalidArgumentError(absl::StrCat("device matrix [", rows, ", ", cols, "] from ", total, " values"));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(m.data, DeviceBuffer::Allocate(count * cuda::ElementBytes(type)));
  if (type == ElementType::kF32) {
    int64_t offset = 0;
    for (const Tensor* t : parts) {
      EXPERTMESH_RETURN_IF_ERROR(DeviceBuffer::CopyHostToDevice(m.data.as<float>() + offset, t->data(), t->size() * 4));
      offset += t->size();
    }
    return m;
  }
  EXPERTMESH_ASSIGN_OR_RETURN(DeviceBuffer staging, DeviceBuffer::Allocate(count * 4));
  int64_t offset = 0;
  for (const Tensor* t : parts) {
    EXPERTMESH_RETURN_IF_ERROR(DeviceBuffer::CopyHostToDevice(staging.as<float>() + offset, t->data(), t->size() * 4));
    offset += t->size();
  }
  EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchFloatToBFloat16(staging.as<float>(), m.data.as<uint16_t>(), count, nullptr));
  EXPERTMESH_RETURN_IF_ERROR(cuda::Synchronize());  // staging is freed on return
  return m;
}

absl::StatusOr<DeviceMatrix> UploadTensor(const Tensor& t, ElementType type) {
  if (t.empty()) return DeviceMatrix{};
  const int64_t rows = t.rank() == 2 ? t.dim(0) : 1;
  const int64_t cols = t.rank() == 2 ? t.dim(1) : t.size();
  return Upload({&t}, rows, cols, type);
}

absl::StatusOr<DeviceMlp> UploadMlp(const MlpWeights& mlp, ElementType type) {
  DeviceMlp out;
  out.intermediate = mlp.gate_proj.dim(0);
  const int64_t hidden = mlp.gate_proj.dim(1);
  EXPERTMESH_ASSIGN_OR_RETURN(out.gate_up, Upload({&mlp.gate_proj, &mlp.up_proj}, 2 * out.intermediate, hidden, type));
  EXPERTMESH_ASSIGN_OR_RETURN(out.down, UploadTensor(mlp.down_proj, type));
  return out;
}

}  // namespace

uint64_t GpuModelWeights::ByteSize() const {
  uint64_t bytes = embed_tokens.data.bytes() + norm.data.bytes() + lm_head.data.bytes();
  for (const DeviceLayer& l : layers) {
    for (const DeviceMatrix* m : {&l.input_layernorm, &l.post_attention_layernorm, &l.q_proj, &l.q_a_proj,
                                  &l.q_a_layernorm, &l.q_b_proj, &l.kv_a_proj_with_mqa, &l.kv_a_layernorm,
                                  &l.kv_b_proj, &l.o_proj, &l.gate, &l.gate_bias}) {
      bytes += m->data.bytes();
    }
    for (const std::optional<DeviceMlp>* mlp : {&l.dense_mlp, &l.shared_experts}) {
      if (mlp->has_value()) bytes += (*mlp)->gate_up.data.bytes() + (*mlp)->down.data.bytes();
    }
  }
  return bytes;
}

absl::StatusOr<GpuModelWeights> UploadModelWeights(const ModelConfig& config, const ModelWeights& weights,
                                                   ElementType type) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateModelWeights(config, weights));
  GpuModelWeights out;
  EXPERTMESH_ASSIGN_OR_RETURN(out.embed_tokens, UploadTensor(weights.embed_tokens, type));
  EXPERTMESH_ASSIGN_OR_RETURN(out.norm, UploadTensor(weights.norm, ElementType::kF32));
  EXPERTMESH_ASSIGN_OR_RETURN(out.lm_head, UploadTensor(weights.output_projection(), type));
  for (const LayerWeights& w : weights.layers) {
    DeviceLayer l;
    const AttentionWeights& a = w.attention;
    EXPERTMESH_ASSIGN_OR_RETURN(l.input_layernorm, UploadTensor(w.input_layernorm, ElementType::kF32));
    EXPERTMESH_ASSIGN_OR_RETURN(l.post_attention_layernorm, UploadTensor(w.post_attention_layernorm, ElementType::kF32));
    EXPERTMESH_ASSIGN_OR_RETURN(l.q_proj, UploadTensor(a.q_proj, type));
    EXPERTMESH_ASSIGN_OR_RETURN(l.q_a_proj, UploadTensor(a.q_a_proj, type));
    EXPERTMESH_ASSIGN_OR_RETURN(l.q_a_layernorm, UploadTensor(a.q_a_layernorm, ElementType::kF32));
    EXPERTMESH_ASSIGN_OR_RETURN(l.q_b_proj, UploadTensor(a.q_b_proj, type));
    EXPERTMESH_ASSIGN_OR_RETURN(l.kv_a_proj_with_mqa, UploadTensor(a.kv_a_proj_with_mqa, type));
    EXPERTMESH_ASSIGN_OR_RETURN(l.kv_a_layernorm, UploadTensor(a.kv_a_layernorm, ElementType::kF32));
    EXPERTMESH_ASSIGN_OR_RETURN(l.kv_b_proj, UploadTensor(a.kv_b_proj, type));
    EXPERTMESH_ASSIGN_OR_RETURN(l.o_proj, UploadTensor(a.o_proj, type));
    if (w.dense_mlp) {
      EXPERTMESH_ASSIGN_OR_RETURN(DeviceMlp mlp, UploadMlp(*w.dense_mlp, type));
      l.dense_mlp = std::move(mlp);
    }
    if (w.gate) {
      EXPERTMESH_ASSIGN_OR_RETURN(l.gate, UploadTensor(w.gate->weight, ElementType::kF32));
      EXPERTMESH_ASSIGN_OR_RETURN(l.gate_bias, UploadTensor(w.gate->e_score_correction_bias, ElementType::kF32));
    }
    if (w.shared_experts) {
      EXPERTMESH_ASSIGN_OR_RETURN(DeviceMlp mlp, UploadMlp(*w.shared_experts, type));
      l.shared_experts = std::move(mlp);
    }
    out.layers.push_back(std::move(l));
  }
  return out;
}

}  // namespace expertmesh
