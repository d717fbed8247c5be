// CudaRoutedExperts' W8A8 path for FP8 experts (kCublasFp8): each expert's rows padded to 16 and
// rounded to E4M3 per 128 values, its two block-scaled FP8 cuBLASLt GEMMs (gate|up, then down on
// the SwiGLU output rounded the same way) on one of kCublasStreams streams, bf16 outputs combined.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/model/cuda/cuda_routed_experts.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/fp8_rows.h"
#include "engine/ops/cuda/moe_kernels.h"

namespace expertmesh {
namespace {

using cuda::CudaStatus;
using cuda::Fp8BlockGemm;

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

absl::Status CudaRoutedExperts::Fp8ProductsAvailable() {
  std::lock_guard<std::mutex> lock(mutex_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  return Fp8ProductsAvailableLocked();
}

absl::Status CudaRoutedExperts::Fp8ProductsAvailableLocked() {
  if (options_.format != GpuExpertFormat::kFP8Block) {
    return absl::FailedPreconditionError("W8A8 expert products need FP8 experts");
  }
  const int64_t hidden = options_.hidden_size, intermediate = options_.intermediate_size;
  EXPERTMESH_RETURN_IF_ERROR(Fp8BlockGemm::CheckFeatures(hidden, 2 * intermediate));
  EXPERTMESH_RETURN_IF_ERROR(Fp8BlockGemm::CheckFeatures(intermediate, hidden));
  if (fp8_gemm_ == nullptr && absl::IsUnknown(fp8_gemm_status_)) {
    auto gemm = Fp8BlockGemm::Create();
    fp8_gemm_status_ = gemm.status();
    if (gemm.ok()) fp8_gemm_ = std::move(gemm).value();
  }
  return fp8_gemm_status_;
}

absl::Status CudaRoutedExperts::RunCublasFp8(const LayerStorage& layer, const DeviceExpertBatch& batch,
                                             std::span<const int32_t> offsets, const void** y,
                                             const int32_t** row_of_slot, void* stream) {
  EXPERTMESH_RETURN_IF_ERROR(Fp8ProductsAvailableLocked());
  Scratch& s = *scratch_;
  const int64_t hidden = options_.hidden_size, intermediate = options_.intermediate_size;
  const int64_t num_local = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t slots = batch.num_tokens * batch.top_k;
  // The padded layout: expert i (of those with rows) owns padded rows [padded[i], padded[i + 1]).
  std::vector<int32_t> with_rows, padded = {0}, padded_base(num_local, 0);
  std::vector<cuda::PaddedRow> table;
  for (int64_t e = 0; e < num_local; ++e) {
    const int32_t count = offsets[e + 1] - offsets[e];
    if (count == 0) continue;
    const int64_t multiple = fp8_gemm_->row_multiple();
    const auto rows = static_cast<int32_t>((count + multiple - 1) / multiple * multiple);
    const int32_t index = static_cast<int32_t>(with_rows.size());
    padded_base[e] = padded.back();
    for (int32_t r = 0; r < rows; ++r) table.push_back({r < count ? offsets[e] + r : -1, index});
    with_rows.push_back(static_cast<int32_t>(e));
    padded.push_back(padded.back() + rows);
  }
  const int64_t experts = static_cast<int64_t>(with_rows.size()), total = padded.back();
  if (experts == 0) return absl::OkStatus();
  EXPERTMESH_RETURN_IF_ERROR(s.fp8_table.GrowTo(table.size() * sizeof(cuda::PaddedRow)));
  EXPERTMESH_RETURN_IF_ERROR(s.fp8_padded_offsets.GrowTo(padded.size() * sizeof(int32_t)));
  EXPERTMESH_RETURN_IF_ERROR(s.padded_base.GrowTo(num_local * sizeof(int32_t)));
  EXPERTMESH_RETURN_IF_ERROR(s.fp8_rows.GrowTo(total * hidden));
  EXPERTMESH_RETURN_IF_ERROR(s.fp8_row_scales.GrowTo(total * (hidden / 128) * sizeof(float)));
  EXPERTMESH_RETURN_IF_ERROR(s.padded_gate_up.GrowTo(total * 2 * intermediate * 2));
  EXPERTMESH_RETURN_IF_ERROR(s.fp8_h.GrowTo(total * intermediate));
  EXPERTMESH_RETURN_IF_ERROR(s.fp8_h_scales.GrowTo(total * (intermediate / 128) * sizeof(float)));
  EXPERTMESH_RETURN_IF_ERROR(s.padded_y.GrowTo(total * hidden * 2));
  EXPERTMESH_RETURN_IF_ERROR(s.padded_row_of_slot.GrowTo(slots * sizeof(int32_t)));
  // Pageable sources: the copies return once the bytes are staged, so the vectors may go.
  for (const auto& [device, host, bytes] :
       {std::tuple{s.fp8_table.data(), static_cast<const void*>(table.data()), table.size() * sizeof(cuda::PaddedRow)},
        std::tuple{s.fp8_padded_offsets.data(), static_cast<const void*>(padded.data()), padded.size() * 4},
        std::tuple{s.padded_base.data(), static_cast<const void*>(padded_base.data()), padded_base.size() * 4}}) {
    EXPERTMESH_RETURN_IF_ERROR(
        CudaStatus(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, AsStream(stream)), "W8A8 tables upload"));
  }
  const auto* padded_table = s.fp8_table.as<cuda::PaddedRow>();
  const int32_t* padded_offsets = s.fp8_padded_offsets.as<int32_t>();
  EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchQuantizeExpertRows(batch.activations, s.row_token.as<int32_t>(),
                                                            padded_table, padded_offsets, total, hidden,
                                                            s.fp8_rows.as<uint8_t>(), s.fp8_row_scales.as<float>(),
                                                            stream));
  void* lanes[kCublasStreams] = {stream};
  EXPERTMESH_RETURN_IF_ERROR(ForkLanes(kCublasStreams, stream, lanes));
  auto* gate_up = s.padded_gate_up.as<uint16_t>();
  absl::Status status;
  for (int64_t i = 0; status.ok() && i < experts; ++i) {
    const ExpertStorage& expert = layer.slots[with_rows[i]];
    const int64_t first = padded[i], rows = padded[i + 1] - padded[i];
    const int lane = static_cast<int>(i % kCublasStreams);
    status = fp8_gemm_->Multiply(s.fp8_rows.as<uint8_t>() + first * hidden,
                                 s.fp8_row_scales.as<float>() + first * (hidden / 128), rows, hidden,
                                 expert.gate_up.as<uint8_t>(), expert.gate_up_scale.as<float>(), 2 * intermediate,
                                 gate_up + first * 2 * intermediate, lane, lanes[lane]);
    if (status.ok()) {
      status = cuda::LaunchQuantizeSwiGlu(gate_up, padded_table, padded_offsets, first, rows, intermediate,
                                          s.fp8_h.as<uint8_t>(), s.fp8_h_scales.as<float>(), lanes[lane]);
    }
    if (status.ok()) {
      status = fp8_gemm_->Multiply(s.fp8_h.as<uint8_t>() + first * intermediate,
                                   s.fp8_h_scales.as<float>() + first * (intermediate / 128), rows, intermediate,
                                   expert.down.as<uint8_t>(), expert.down_scale.as<float>(), hidden,
                                   s.padded_y.as<uint16_t>() + first * hidden, lane, lanes[lane]);
    }
  }
  const absl::Status joined = JoinLanes(kCublasStreams, stream, lanes);
  EXPERTMESH_RETURN_IF_ERROR(status);
  EXPERTMESH_RETURN_IF_ERROR(joined);
  EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchPadRowsOfSlots(s.row_of_slot.as<int32_t>(), slots, s.offsets.as<int32_t>(),
                                                        num_local, s.padded_base.as<int32_t>(),
                                                        s.padded_row_of_slot.as<int32_t>(), stream));
  *y = s.padded_y.data();
  *row_of_slot = s.padded_row_of_slot.as<int32_t>();
  return absl::OkStatus();
}

}  // namespace expertmesh
