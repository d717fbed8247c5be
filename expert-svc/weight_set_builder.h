// Building one shard's weight-set matrices: a parent's from its checkpoint (only the hosted
// experts, shape-checked, as float32) and a blend's with engine/merge's TensorMerger, the same
// per-tensor merge as the offline expertmesh-merge (so the values equal what the offline tool
// writes), pointing at the base parent's tensor wherever the blend's values are bitwise the
// base's. Both report progress, stop when asked (CANCELLED) and reserve every new tensor's bytes
// before allocating it (the store's memory budget answers RESOURCE_EXHAUSTED).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/checkpoint.h"
#include "engine/format/model_config.h"
#include "engine/merge/tensor_merger.h"
#include "expert-svc/hosted_experts.h"
#include "expert-svc/weight_set.h"

namespace expertmesh::expert_service {

struct BuildProgress {
  int64_t tensors_done = 0;
  int64_t tensors_total = 0;
  uint64_t bytes_done = 0;  // float32 bytes read or produced
  uint64_t bytes_total = 0;
  int64_t merged = 0;            // blends
  int64_t shared_with_base = 0;  // blends
  bool blend = false;
  // "loading: 12/48 tensors (1.2/4.7 MB)" / "merging: 12/48 tensors (1.2/4.7 MB): 10 merged, 2 shared with base"
  std::string ToString() const;
};

struct BuildControl {
  std::function<void(const BuildProgress&)> progress;  // may be empty
  // Called with the bytes of each new tensor before it is allocated; an error stops the build.
  std::function<absl::Status(uint64_t bytes)> reserve;  // may be empty
  std::stop_token stop;
};

// The shard's expert tensor names: gate, up, down per expert, layers and experts ascending.
std::vector<std::string> ShardExpertTensorNames(const HostedExperts& hosted);
// A Checkpoint::Open name filter for exactly the hosted experts' tensors (FP8 scales included).
std::function<bool(const std::string&)> ShardTensorFilter(const HostedExperts& hosted);

// The fields that fix expert shapes and placement (hidden_size, moe_intermediate_size,
// n_routed_experts, layers, MoE layer pattern) equal the shard model's; INVALID_ARGUMENT naming the
// first difference and `what`.
absl::Status CheckExpertLayout(const ModelConfig& candidate, const ModelConfig& shard_model, const std::string& what);

// Float32 bytes of the hosted experts' matrices.
uint64_t HostedMatrixBytes(const ModelConfig& config, const HostedExperts& hosted);

// Reads the hosted experts from `checkpoint` (opened with ShardTensorFilter).
absl::StatusOr<ExpertMatrixMap> LoadParentMatrices(const Checkpoint& checkpoint, const HostedExperts& hosted,
                                                   const BuildControl& control);

struct BlendMatrices {
  ExpertMatrixMap matrices;
  int64_t merged = 0;
  int64_t shared_with_base = 0;
};

// Merges the hosted experts with `merger` (its parents opened with ShardTensorFilter). `base` is
// the resident base parent's matrices (the same values its checkpoint holds).
absl::StatusOr<BlendMatrices> MergeBlendMatrices(const TensorMerger& merger, const ExpertMatrixMap& base,
                                                 const HostedExperts& hosted, const BuildControl& control);

// Identity of a checkpoint's files (path, size, modification time): a parent whose files change
// after it was loaded cannot be blended (its resident tensors would no longer be the file's).
std::string CheckpointFingerprint(const Checkpoint& checkpoint);

}  // namespace expertmesh::expert_service
