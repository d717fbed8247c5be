// GpuModel's layer math on the device: embedding, MLA attention (projections, RoPE and cache
// write, absorbed scores over the paged cache, value up-projection, o_proj), dense SwiGLU and the
// MoE block (router, gate, routed experts through the RoutedExperts seam, shared experts).
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/model/cuda/gpu_model.h"
#include "engine/model/mla_attention.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/decode_linear.h"
#include "engine/ops/cuda/model_kernels.h"
#include "engine/ops/cuda/moe_kernels.h"

namespace expertmesh {
namespace {

using cuda::CudaStatus;
using cuda::ElementType;

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

const void* GpuModel::AsGemmInput(const float* x, int64_t count, ElementType type) {
  if (type == ElementType::kF32) return x;
  if (x != converted_source_ || count != converted_count_) {
    // Conversion errors surface as the next launch's error; the launcher only rejects count < 0.
    (void)cuda::LaunchFloatToBFloat16(x, buffers_->gemm_input.as<uint16_t>(), count, stream_);
    converted_source_ = x;
    converted_count_ = count;
  }
  return buffers_->gemm_input.data();
}

absl::Status GpuModel::NormRows(float* residual, const float* delta, const int32_t* source_rows, const float* weight,
                                int64_t rows, int64_t cols, float eps, float* out) {
  uint16_t* copy = options_.weight_type == ElementType::kBF16 ? buffers_->gemm_input.as<uint16_t>() : nullptr;
  InvalidateGemmInput();
  EXPERTMESH_RETURN_IF_ERROR(
      cuda::LaunchAddRmsNorm(residual, delta, source_rows, weight, rows, cols, eps, out, stream_, copy));
  if (copy != nullptr) {
    converted_source_ = out;
    converted_count_ = rows * cols;
  }
  return absl::OkStatus();
}

bool GpuModel::UsesDecodeLinear(const DeviceMatrix& w, int64_t rows) const {
  return w.type == ElementType::kBF16 && rows <= options_.decode_linear_max_rows && rows <= cuda::kDecodeLinearMaxRows &&
         w.cols % 8 == 0;
}

absl::Status GpuModel::Linear(const float* x, int64_t rows, const DeviceMatrix& w, float* y, bool accumulate) {
  if (UsesDecodeLinear(w, rows)) {
    return cuda::LaunchDecodeLinear(x, rows, w.cols, w.data.as<uint16_t>(), w.rows, y, accumulate, stream_,
                                    options_.decode_linear_weight_ring);
  }
  const void* input = AsGemmInput(x, rows * w.cols, w.type);
  return blas_->Linear(input, rows, w.cols, w.data.data(), w.rows, y, w.type, ElementType::kF32, stream_, accumulate);
}

absl::Status GpuModel::SwiGlu(const DeviceMlp& mlp, const float* x, int64_t tokens, float* out, bool accumulate) {
  Buffers& b = *buffers_;
  if (UsesDecodeLinear(mlp.gate_up, tokens) && UsesDecodeLinear(mlp.down, tokens)) {
    EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchDecodeSwiGlu(x, tokens, mlp.gate_up.cols, mlp.gate_up.data.as<uint16_t>(),
                                                        mlp.intermediate, b.h.as<float>(), stream_,
                                                        options_.decode_linear_weight_ring));
    InvalidateGemmInput();  // h has new contents
    return Linear(b.h.as<float>(), tokens, mlp.down, out, accumulate);
  }
  EXPERTMESH_RETURN_IF_ERROR(Linear(x, tokens, mlp.gate_up, b.gate_up.as<float>()));
  // A bf16 down projection on cuBLAS takes h in bf16: the SiLU kernel writes it straight into
  // gemm_input (after the gate/up GEMM has read it, in stream order) instead of a float32 h.
  const bool h_in_bf16 = mlp.down.type == ElementType::kBF16 && !UsesDecodeLinear(mlp.down, tokens);
  InvalidateGemmInput();  // gemm_input or h gets new contents
  EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchSiluMultiplyRows(b.gate_up.as<float>(), tokens, mlp.intermediate,
                                                          h_in_bf16 ? b.gemm_input.data() : b.h.data(), h_in_bf16,
                                                          stream_));
  if (h_in_bf16) {
    converted_source_ = b.h.as<float>();
    converted_count_ = tokens * mlp.intermediate;
  }
  return Linear(b.h.as<float>(), tokens, mlp.down, out, accumulate);
}

absl::Status GpuModel::RunLayers(int64_t tokens, bool capturable, const RoutingObserver* observer) {
  EXPERTMESH_RETURN_IF_ERROR(EmbedTokens(tokens));
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
    EXPERTMESH_RETURN_IF_ERROR(AttentionBlock(layer, 0, tokens, step_sequences_));
    EXPERTMESH_RETURN_IF_ERROR(Mlp(layer, tokens, capturable, observer));
  }
  return AddLastMlpToResidual(tokens);
}

absl::Status GpuModel::EmbedTokens(int64_t tokens) {
  Buffers& b = *buffers_;
  return cuda::LaunchEmbeddingRows(weights_.embed_tokens.data.data(), weights_.embed_tokens.type == ElementType::kBF16,
                                   b.token_ids.as<int32_t>(), tokens, config_.hidden_size, b.residual.as<float>(),
                                   stream_);
}

absl::Status GpuModel::AddLastMlpToResidual(int64_t tokens) {
  Buffers& b = *buffers_;
  return cuda::LaunchAddInPlace(b.residual.as<float>(), b.mlp_out.as<float>(), tokens * config_.hidden_size, stream_);
}

absl::Status GpuModel::AttentionBlock(int64_t layer, int64_t first_row, int64_t tokens,
                                      std::span<const StepSequence> sequences) {
  Buffers& b = *buffers_;
  const DeviceLayer& w = weights_.layers[layer];
  const int64_t hidden = config_.hidden_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  float* residual = b.residual.as<float>() + first_row * hidden;
  const float* mlp_rows = layer == 0 ? nullptr : b.mlp_out.as<float>() + first_row * hidden;
  EXPERTMESH_RETURN_IF_ERROR(NormRows(residual, mlp_rows, nullptr, w.input_layernorm.data.as<float>(), tokens, hidden,
                                      eps, b.normed.as<float>()));
  EXPERTMESH_RETURN_IF_ERROR(Attention(layer, first_row, tokens, sequences));
  return NormRows(residual, b.attention_out.as<float>(), nullptr, w.post_attention_layernorm.data.as<float>(), tokens,
                  hidden, eps, b.normed.as<float>());
}

absl::Status GpuModel::Attention(int64_t layer, int64_t first_row, int64_t tokens,
                                 std::span<const StepSequence> sequences) {
  Buffers& b = *buffers_;  // normed was just written by NormRows (which keeps its bf16 copy)
  const DeviceLayer& w = weights_.layers[layer];
  const int64_t heads = config_.num_attention_heads, nope = config_.qk_nope_head_dim;
  const int64_t rope = config_.qk_rope_head_dim, rank = config_.kv_lora_rank, v_dim = config_.v_head_dim;
  const int64_t qk = nope + rope, per_head = nope + v_dim;
  // Both products of normed first (one bf16 copy of it serves them), then the q LoRA's norm.
  EXPERTMESH_RETURN_IF_ERROR(Linear(b.normed.as<float>(), tokens, config_.q_lora_rank ? w.q_a_proj : w.q_proj,
                                    config_.q_lora_rank ? b.q_latent.as<float>() : b.q.as<float>()));
  EXPERTMESH_RETURN_IF_ERROR(Linear(b.normed.as<float>(), tokens, w.kv_a_proj_with_mqa, b.kv.as<float>()));
  if (config_.q_lora_rank) {
    EXPERTMESH_RETURN_IF_ERROR(NormRows(b.q_latent.as<float>(), nullptr, nullptr, w.q_a_layernorm.data.as<float>(),
                                        tokens, *config_.q_lora_rank, kLatentNormEpsilon,
                                        b.q_latent_normed.as<float>()));
    EXPERTMESH_RETURN_IF_ERROR(Linear(b.q_latent_normed.as<float>(), tokens, w.q_b_proj, b.q.as<float>()));
  }
  const cuda::MlaDims dims{heads, nope, rope, rank};
  // The rows' positions and sequences start at first_row (a micro-batch's); every other buffer
  // here is scratch holding just these rows from row 0.
  const cuda::PagedCacheView cache{b.cache[layer].as<float>(), b.token_pos.as<int32_t>() + first_row,
                                   b.token_seq.as<int32_t>() + first_row, b.block_table.as<int32_t>(),
                                   max_pages_per_sequence_, options_.page_tokens};
  const bool interleaved = config_.model_type == "deepseek_v2" || config_.rope_interleave;
  EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchMlaPrepare(b.q.as<float>(), b.kv.as<float>(), w.kv_a_layernorm.data.as<float>(),
                                                    kLatentNormEpsilon, b.cos.as<float>(), b.sin.as<float>(),
                                                    b.table_positions, interleaved, dims, cache, tokens, stream_));
  const ElementType type = w.kv_b_proj.type;
  const size_t element = cuda::ElementBytes(type);
  if (naive_step_) {
    for (StepSequence sequence : sequences) {
      sequence.first_row -= first_row;
      EXPERTMESH_RETURN_IF_ERROR(NaiveAttention(w, cache, sequence));
    }
    return Linear(b.heads_out.as<float>(), tokens, w.o_proj, b.attention_out.as<float>());
  }
  // q_absorbed[t, h] = q_nope[t, h] * W_uk[h] ([nope, rank] rows of kv_b_proj): the query in latent space.
  cuda::GemmShape absorb;
  absorb.m = tokens;
  absorb.n = rank;
  absorb.k = nope;
  absorb.lda = heads * qk;
  absorb.ldb = rank;
  absorb.ldc = heads * rank;
  absorb.b_transposed = false;
  absorb.batch = heads;
  absorb.stride_a = qk;
  absorb.stride_b = per_head * rank;
  absorb.stride_c = rank;
  EXPERTMESH_RETURN_IF_ERROR(blas_->Gemm(absorb, AsGemmInput(b.q.as<float>(), tokens * heads * qk, type),
                                         w.kv_b_proj.data.data(), b.q_absorbed.data(), type, ElementType::kF32, stream_));
  EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchMlaAttention(b.q_absorbed.as<float>(), b.q.as<float>(), softmax_scale_, dims,
                                                      cache, tokens, b.context.as<float>(), stream_,
                                                      options_.split_decode_attention ? b.attention_split.as<float>()
                                                                                      : nullptr,
                                                      static_cast<int64_t>(b.attention_split.bytes() / 4)));
  // heads_out[t, h] = W_uv[h] ([v_dim, rank] rows of kv_b_proj) * context[t, h].
  cuda::GemmShape value;
  value.m = tokens;
  value.n = v_dim;
  value.k = rank;
  value.lda = heads * rank;
  value.ldb = rank;
  value.ldc = heads * v_dim;
  value.b_transposed = true;
  value.batch = heads;
  value.stride_a = rank;
  value.stride_b = per_head * rank;
  value.stride_c = v_dim;
  const auto* value_up = static_cast<const std::byte*>(w.kv_b_proj.data.data()) + nope * rank * element;
  EXPERTMESH_RETURN_IF_ERROR(blas_->Gemm(value, AsGemmInput(b.context.as<float>(), tokens * heads * rank, type), value_up,
                                         b.heads_out.data(), type, ElementType::kF32, stream_));
  return Linear(b.heads_out.as<float>(), tokens, w.o_proj, b.attention_out.as<float>());
}

absl::Status GpuModel::NaiveAttention(const DeviceLayer& w, const cuda::PagedCacheView& cache,
                                      const StepSequence& sequence) {
  Buffers& b = *buffers_;
  const int64_t heads = config_.num_attention_heads, nope = config_.qk_nope_head_dim;
  const int64_t rope = config_.qk_rope_head_dim, rank = config_.kv_lora_rank, v_dim = config_.v_head_dim;
  const int64_t qk = nope + rope, per_head = nope + v_dim, row = rank + rope;
  const int64_t queries = sequence.tokens, keys = sequence.start + sequence.tokens;
  EXPERTMESH_RETURN_IF_ERROR(
      cuda::LaunchGatherSequenceCache(cache, sequence.sequence, keys, row, b.cache_rows.as<float>(), stream_));
  InvalidateGemmInput();  // cache_rows has new contents
  // Per-head keys (nope part) and values of every cached position: latents * kv_b_proj^T.
  const ElementType type = w.kv_b_proj.type;
  cuda::GemmShape expand;
  expand.m = keys;
  expand.n = heads * per_head;
  expand.k = rank;
  expand.lda = row;
  expand.ldb = rank;
  expand.ldc = heads * per_head;
  EXPERTMESH_RETURN_IF_ERROR(blas_->Gemm(expand, AsGemmInput(b.cache_rows.as<float>(), keys * row, type),
                                         w.kv_b_proj.data.data(), b.kv_expanded.data(), type, ElementType::kF32,
                                         stream_));
  const size_t score_bytes = heads * queries * keys * sizeof(float);
  if (b.scores.bytes() < score_bytes) {
    b.scores = cuda::DeviceBuffer();
    EXPERTMESH_ASSIGN_OR_RETURN(b.scores, cuda::DeviceBuffer::Allocate(score_bytes));
  }
  // scores[h] = q_nope[h] k_nope[h]^T + q_rope[h] k_rope^T (float32; the rope key is shared by all heads).
  const float* q = b.q.as<float>() + sequence.first_row * heads * qk;
  cuda::GemmShape nope_scores;
  nope_scores.m = queries;
  nope_scores.n = keys;
  nope_scores.k = nope;
  nope_scores.lda = heads * qk;
  nope_scores.ldb = heads * per_head;
  nope_scores.ldc = keys;
  nope_scores.batch = heads;
  nope_scores.stride_a = qk;
  nope_scores.stride_b = per_head;
  nope_scores.stride_c = queries * keys;
  nope_scores.fast_tf32 = options_.weight_type == ElementType::kBF16;  // serving mode: TF32 is finer than bf16
  EXPERTMESH_RETURN_IF_ERROR(blas_->Gemm(nope_scores, q, b.kv_expanded.data(), b.scores.data(), ElementType::kF32,
                                         ElementType::kF32, stream_));
  cuda::GemmShape rope_scores = nope_scores;
  rope_scores.k = rope;
  rope_scores.ldb = row;
  rope_scores.stride_b = 0;
  rope_scores.beta = 1.0f;
  EXPERTMESH_RETURN_IF_ERROR(blas_->Gemm(rope_scores, q + nope, b.cache_rows.as<float>() + rank, b.scores.data(),
                                         ElementType::kF32, ElementType::kF32, stream_));
  EXPERTMESH_RETURN_IF_ERROR(
      cuda::LaunchCausalSoftmax(b.scores.as<float>(), heads, queries, keys, sequence.start, softmax_scale_, stream_));
  // heads_out[t, h] = P[h, t] * V[h] (values: the last v_dim of each head's expanded block).
  cuda::GemmShape values;
  values.m = queries;
  values.n = v_dim;
  values.k = keys;
  values.lda = keys;
  values.ldb = heads * per_head;
  values.ldc = heads * v_dim;
  values.b_transposed = false;
  values.batch = heads;
  values.stride_a = queries * keys;
  values.stride_b = per_head;
  values.stride_c = v_dim;
  values.fast_tf32 = nope_scores.fast_tf32;
  return blas_->Gemm(values, b.scores.data(), b.kv_expanded.as<float>() + nope,
                     b.heads_out.as<float>() + sequence.first_row * heads * v_dim, ElementType::kF32,
                     ElementType::kF32, stream_);
}

absl::Status GpuModel::Mlp(int64_t layer, int64_t tokens, bool capturable, const RoutingObserver* observer) {
  Buffers& b = *buffers_;  // normed was just written by NormRows (which keeps its bf16 copy)
  const DeviceLayer& w = weights_.layers[layer];
  if (!config_.IsMoeLayer(layer)) return SwiGlu(*w.dense_mlp, b.normed.as<float>(), tokens, b.mlp_out.as<float>(), false);
  const int64_t top_k = config_.num_experts_per_tok;
  EXPERTMESH_RETURN_IF_ERROR(Gate(layer, tokens));
  cudaStream_t stream = AsStream(stream_);
  if (observer != nullptr && *observer) {
    std::vector<int32_t> ids(tokens * top_k);
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(ids.data(), b.expert_ids.data(), ids.size() * 4,
                                                          cudaMemcpyDeviceToHost, stream), "routing download"));
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "routing"));
    (*observer)(layer, ids, tokens, top_k);
  }
  if (cuda_experts_ != nullptr && step_experts_ == nullptr) {
    DeviceExpertBatch batch{layer, tokens, top_k, b.normed.as<float>(), b.expert_ids.as<int32_t>(),
                            b.expert_weights.as<float>(), b.mlp_out.as<float>(), false, capturable};
    absl::Status status = cuda_experts_->ComputeOnDevice(batch, stream_);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("routed experts of layer ", layer, ": ", status.message()));
    }
  } else {
    return HostExperts(layer, tokens);
  }
  if (w.shared_experts) {
    EXPERTMESH_RETURN_IF_ERROR(SwiGlu(*w.shared_experts, b.normed.as<float>(), tokens, b.mlp_out.as<float>(), true));
  }
  return absl::OkStatus();
}

absl::Status GpuModel::Gate(int64_t layer, int64_t tokens) {
  Buffers& b = *buffers_;
  const DeviceLayer& w = weights_.layers[layer];
  const int64_t top_k = config_.num_experts_per_tok;
  EXPERTMESH_RETURN_IF_ERROR(Linear(b.normed.as<float>(), tokens, w.gate, b.router_logits.as<float>()));
  cuda::GateConfig gate;
  gate.experts = config_.n_routed_experts;
  gate.top_k = top_k;
  gate.groups = config_.n_group;
  gate.topk_group = config_.topk_group;
  gate.method = config_.topk_method == TopKMethod::kGreedy ? 0 : config_.topk_method == TopKMethod::kGroupLimitedGreedy ? 1 : 2;
  gate.sigmoid = config_.scoring_func == ScoringFunction::kSigmoid;
  gate.normalize = config_.model_type != "deepseek_v2" && config_.norm_topk_prob;
  gate.scaling = static_cast<float>(config_.routed_scaling_factor);
  const float* bias = w.gate_bias.data.bytes() > 0 && w.gate_bias.rows * w.gate_bias.cols > 0 ? w.gate_bias.data.as<float>()
                                                                                             : nullptr;
  return cuda::LaunchMoeGate(b.router_logits.as<float>(), bias, gate, tokens, b.expert_ids.as<int32_t>(),
                             b.expert_weights.as<float>(), stream_);
}

}  // namespace expertmesh
