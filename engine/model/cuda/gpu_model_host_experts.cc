// GpuModel's routed experts behind a host-side RoutedExperts (the attention tier's fan-out to the
// expert shards): pinned staging, the round trip started and finished per MoE layer, and the
// two-micro-batch schedule in which one half's round trip overlaps the other half's attention.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <future>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/model/cuda/gpu_model.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/model_kernels.h"

namespace expertmesh {
namespace {

using cuda::CudaStatus;

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

absl::Status InLayer(int64_t layer, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("routed experts of layer ", layer, ": ", status.message()));
}

}  // namespace

absl::Status GpuModel::EnsureHostStaging(int64_t tokens) {
  const int64_t hidden = config_.hidden_size, top_k = config_.num_experts_per_tok;
  const size_t bytes = static_cast<size_t>(tokens) * (2 * hidden + 2 * top_k) * 4;
  if (host_staging_bytes_ >= bytes) return absl::OkStatus();
  if (host_staging_ != nullptr) cudaFreeHost(host_staging_);
  host_staging_ = nullptr;
  host_staging_bytes_ = 0;
  const size_t capacity = std::max<size_t>(bytes, static_cast<size_t>(options_.max_step_tokens) * (2 * hidden + 2 * top_k) * 4);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaHostAlloc(&host_staging_, capacity, cudaHostAllocDefault), "cudaHostAlloc"));
  host_staging_bytes_ = capacity;
  return absl::OkStatus();
}

GpuModel::HostRows GpuModel::StagingRows(int64_t step_tokens, int64_t first_row) const {
  const int64_t hidden = config_.hidden_size, top_k = config_.num_experts_per_tok;
  auto* x = static_cast<float*>(host_staging_);  // [step_tokens, hidden]
  float* out = x + step_tokens * hidden;         // [step_tokens, hidden]
  auto* ids = reinterpret_cast<int32_t*>(out + step_tokens * hidden);  // [step_tokens, top_k]
  auto* weights = reinterpret_cast<float*>(ids + step_tokens * top_k);  // [step_tokens, top_k]
  return {x + first_row * hidden, out + first_row * hidden, ids + first_row * top_k, weights + first_row * top_k};
}

absl::StatusOr<std::future<absl::Status>> GpuModel::StartHostExperts(int64_t layer, int64_t step_tokens,
                                                                     int64_t first_row, int64_t tokens) {
  Buffers& b = *buffers_;
  const DeviceLayer& w = weights_.layers[layer];
  const int64_t hidden = config_.hidden_size, top_k = config_.num_experts_per_tok;
  cudaStream_t stream = AsStream(stream_);
  EXPERTMESH_RETURN_IF_ERROR(EnsureHostStaging(step_tokens));
  // Allocated at start unless the model's experts live on the device (a step's override then
  // takes this host path).
  EXPERTMESH_RETURN_IF_ERROR(b.routed_out.GrowTo(static_cast<size_t>(options_.max_step_tokens * hidden * 4)));
  const HostRows rows = StagingRows(step_tokens, first_row);
  // One synchronisation: the copies are queued behind the gate on the model's stream. It also
  // orders the reuse of these rows of `out`, whose upload by the previous MoE layer was queued
  // before.
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(rows.x, b.normed.data(), tokens * hidden * 4,
                                                        cudaMemcpyDeviceToHost, stream), "activations download"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(rows.ids, b.expert_ids.data(), tokens * top_k * 4,
                                                        cudaMemcpyDeviceToHost, stream), "routing download"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(rows.weights, b.expert_weights.data(), tokens * top_k * 4,
                                                        cudaMemcpyDeviceToHost, stream), "gate weights download"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "routing"));
  std::memset(rows.out, 0, tokens * hidden * 4);
  RoutedExpertBatch batch;
  batch.layer = layer;
  batch.num_tokens = tokens;
  batch.hidden_size = hidden;
  batch.top_k = top_k;
  batch.activations = std::span<const float>(rows.x, tokens * hidden);
  batch.expert_ids = std::span<const int32_t>(rows.ids, tokens * top_k);
  batch.gate_weights = std::span<const float>(rows.weights, tokens * top_k);
  batch.deadline = expert_deadline_;
  RoutedExperts* experts = step_experts_ != nullptr ? step_experts_ : routed_experts_;
  std::future<absl::Status> routed = experts->ComputeAsync(batch, std::span<float>(rows.out, tokens * hidden));
  // Meanwhile the shared experts (or zeros) fill these rows of mlp_out on the GPU, from normed
  // before anything else is queued behind them.
  float* mlp_rows = b.mlp_out.as<float>() + first_row * hidden;
  const absl::Status shared =
      w.shared_experts ? SwiGlu(*w.shared_experts, b.normed.as<float>(), tokens, mlp_rows, false)
                       : CudaStatus(cudaMemsetAsync(mlp_rows, 0, tokens * hidden * 4, stream), "cudaMemsetAsync");
  if (!shared.ok()) {
    (void)routed.get();  // `out` is written until the experts answer
    return shared;
  }
  return routed;
}

absl::Status GpuModel::FinishHostExperts(int64_t layer, std::future<absl::Status>& routed, int64_t step_tokens,
                                         int64_t first_row, int64_t tokens) {
  Buffers& b = *buffers_;
  const int64_t hidden = config_.hidden_size;
  EXPERTMESH_RETURN_IF_ERROR(InLayer(layer, routed.get()));
  const HostRows rows = StagingRows(step_tokens, first_row);
  float* routed_rows = b.routed_out.as<float>() + first_row * hidden;
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(routed_rows, rows.out, tokens * hidden * 4,
                                                        cudaMemcpyHostToDevice, AsStream(stream_)),
                                        "expert output upload"));
  return cuda::LaunchAddInPlace(b.mlp_out.as<float>() + first_row * hidden, routed_rows, tokens * hidden, stream_);
}

absl::Status GpuModel::HostExperts(int64_t layer, int64_t tokens) {
  absl::StatusOr<std::future<absl::Status>> routed = StartHostExperts(layer, tokens, 0, tokens);
  if (!routed.ok()) return InLayer(layer, routed.status());
  return FinishHostExperts(layer, *routed, tokens, 0, tokens);
}

std::vector<GpuModel::MicroBatch> GpuModel::SplitInTwoMicroBatches() const {
  std::vector<MicroBatch> batches;
  const auto count = static_cast<int64_t>(step_sequences_.size());  // at least 2 (Step checks)
  // Two halves of about equal token counts, cut between sequences (at least one on each side).
  int64_t total = 0;
  for (const StepSequence& s : step_sequences_) total += s.tokens;
  int64_t best_split = 1, best_gap = total, before = 0;
  for (int64_t split = 1; split < count; ++split) {
    before += step_sequences_[split - 1].tokens;
    const int64_t gap = std::abs(total - 2 * before);
    if (gap < best_gap) {
      best_gap = gap;
      best_split = split;
    }
  }
  for (const auto& [begin, end] : {std::pair<int64_t, int64_t>{0, best_split}, {best_split, count}}) {
    MicroBatch& batch = batches.emplace_back();
    batch.first_row = step_sequences_[begin].first_row;
    batch.sequences.assign(step_sequences_.begin() + begin, step_sequences_.begin() + end);
    for (const StepSequence& s : batch.sequences) batch.tokens += s.tokens;
  }
  return batches;
}

absl::Status GpuModel::FinishMicroBatchMoe(MicroBatch& batch, int64_t step_tokens) {
  if (batch.moe_layer < 0) return absl::OkStatus();
  const int64_t layer = batch.moe_layer;
  batch.moe_layer = -1;
  return FinishHostExperts(layer, batch.routed, step_tokens, batch.first_row, batch.tokens);
}

absl::Status GpuModel::BeginMicroBatchLayer(int64_t layer, MicroBatch& batch, int64_t step_tokens) {
  Buffers& b = *buffers_;
  const DeviceLayer& w = weights_.layers[layer];
  float* mlp_rows = b.mlp_out.as<float>() + batch.first_row * config_.hidden_size;
  EXPERTMESH_RETURN_IF_ERROR(AttentionBlock(layer, batch.first_row, batch.tokens, batch.sequences));
  if (!config_.IsMoeLayer(layer)) return SwiGlu(*w.dense_mlp, b.normed.as<float>(), batch.tokens, mlp_rows, false);
  EXPERTMESH_RETURN_IF_ERROR(Gate(layer, batch.tokens));
  absl::StatusOr<std::future<absl::Status>> routed = StartHostExperts(layer, step_tokens, batch.first_row, batch.tokens);
  if (!routed.ok()) return InLayer(layer, routed.status());
  batch.routed = *std::move(routed);
  batch.moe_layer = layer;
  return absl::OkStatus();
}

absl::Status GpuModel::RunMicroBatches(int64_t tokens, std::vector<MicroBatch>& batches) {
  Buffers& b = *buffers_;
  const int64_t hidden = config_.hidden_size;
  // Staging and the upload buffer are sized before any round trip is in flight (StartHostExperts
  // then never reallocates them under the other micro-batch).
  EXPERTMESH_RETURN_IF_ERROR(EnsureHostStaging(tokens));
  EXPERTMESH_RETURN_IF_ERROR(b.routed_out.GrowTo(static_cast<size_t>(options_.max_step_tokens * hidden * 4)));
  EXPERTMESH_RETURN_IF_ERROR(EmbedTokens(tokens));
  // Layer by layer, micro-batch after micro-batch: finishing one micro-batch's previous MoE layer
  // and running its next attention happen while the other's experts are in flight.
  absl::Status status;
  for (int64_t layer = 0; layer < config_.num_hidden_layers && status.ok(); ++layer) {
    for (MicroBatch& batch : batches) {
      status = FinishMicroBatchMoe(batch, tokens);
      if (status.ok()) status = BeginMicroBatchLayer(layer, batch, tokens);
      if (!status.ok()) break;
    }
  }
  for (MicroBatch& batch : batches) {
    // Always wait: the experts may still be writing into this micro-batch's staging rows.
    const absl::Status finished = FinishMicroBatchMoe(batch, tokens);
    if (status.ok()) status = finished;
  }
  EXPERTMESH_RETURN_IF_ERROR(status);
  return AddLastMlpToResidual(tokens);
}

}  // namespace expertmesh
