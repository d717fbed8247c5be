// LoadCudaRoutedExperts: a shard's routed experts straight from a checkpoint into device memory.
// Each expert's three tensors are taken as the checkpoint stores them (Checkpoint::RawBytes, a
// zero-copy view of the mmapped file; FP8 ones with their `_scale_inv` block scales) and uploaded
// in the shard's format (bf16 and FP8 bytes go up unchanged; float32 is converted on the device;
// FP8 into bf16 is dequantized on the device). Progress reports experts, bytes read and the
// device memory in use after each expert.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/format/checkpoint.h"
#include "engine/model/cuda/cuda_routed_experts.h"
#include "engine/model/weight_loader.h"

namespace expertmesh {

struct CudaExpertLoadProgress {
  int64_t experts_loaded = 0;
  int64_t experts_total = 0;
  uint64_t bytes_read = 0;          // checkpoint bytes uploaded
  uint64_t device_weight_bytes = 0; // expert weights now on the device
  uint64_t device_used_bytes = 0;   // whole card in use (cudaMemGetInfo), all processes
  uint64_t device_total_bytes = 0;
  // "loading experts: 12/64, 1.1 GB read, 1.1 GB of weights on the GPU (5.3 of 79.1 GB in use)"
  std::string ToString() const;
};

struct CudaExpertLoadOptions {
  GpuExpertFormat format = GpuExpertFormat::kBF16;
  ExpertFilter expert_filter;  // null: every routed expert of every MoE layer
  std::function<void(const CudaExpertLoadProgress&)> progress;
};

absl::StatusOr<std::unique_ptr<CudaRoutedExperts>> LoadCudaRoutedExperts(const Checkpoint& checkpoint,
                                                                         const CudaExpertLoadOptions& options);

}  // namespace expertmesh
