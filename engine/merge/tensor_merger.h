// TensorMerger: the Assembly-of-Experts merge of single tensors, shared by the offline tool
// (expertmesh-merge) and expert-svc's live blends, so both produce the same bytes. Built from a
// Recipe and the parents' open Checkpoints (borrowed, in recipe order), it validates the recipe
// against them once, plans every output tensor (name, dtype, shape known before any merging) and
// then merges any tensor or subset of tensors on request:
//   selected tensor:  d = max_{i != base} ||W_i - W_base||_F / ||W_base||_F   (float32 values,
//                     FP8 parents dequantized first); d < delta -> the base tensor, else
//                     W = sum_i lambda_i W_i in float32; stored in the recipe's output dtype
//   other tensors:    the base parent's stored bytes, unchanged (FP8 scale_inv companions too)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/dtype.h"
#include "engine/core/tensor.h"
#include "engine/format/checkpoint.h"
#include "engine/merge/recipe.h"

namespace expertmesh {

enum class TensorOrigin {
  kMerged,          // sum_i lambda_i W_i
  kKeptByDelta,     // selected, but every parent within delta of the base: base values
  kCopiedFromBase,  // not selected: the base parent's stored bytes
};
std::string_view TensorOriginName(TensorOrigin origin);  // "merged", "kept_by_delta", "copied"

// One tensor of the merged checkpoint, known before merging.
struct OutputTensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  bool selected = false;  // matched by a merge glob
};

struct MergedTensor {
  std::string name;
  TensorOrigin origin = TensorOrigin::kMerged;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;  // little-endian, exactly what the offline tool writes
  // Selected tensors: max over non-base parents of ||W_i - W_base|| / ||W_base|| (0 with a
  // single parent, +inf for a zero base tensor with a non-zero difference); NaN when copied.
  double relative_distance = 0.0;

  // True when the values are the base parent's (kKeptByDelta, kCopiedFromBase): a live blend
  // can reference the base weight set's tensor instead of holding a copy.
  bool kept_from_base() const { return origin != TensorOrigin::kMerged; }
  // The values as float32 (FP8 copies are not dequantized here: use the Checkpoint for those).
  absl::StatusOr<Tensor> ToFloat() const;
};

struct TensorMergerOptions {
  // Every merge glob must match a tensor of the base checkpoint (whole-model merges). Expert
  // shards that opened their parents with a name filter see only their own tensors; they may
  // turn this off.
  bool require_every_glob_to_match = true;
};

class TensorMerger {
 public:
  // Validates `recipe` (ValidateRecipe) and the parents against it: parents.size() equals the
  // recipe's parent count, configs equal in every field that changes the math (FP8 quantization
  // aside), every selected tensor present in every parent with the base's shape, every glob
  // matching (see options). INVALID_ARGUMENT names the problem.
  static absl::StatusOr<std::unique_ptr<TensorMerger>> Create(const Recipe& recipe,
                                                              std::vector<const Checkpoint*> parents,
                                                              TensorMergerOptions options = {});

  const Recipe& recipe() const { return recipe_; }
  // Every tensor of the merged checkpoint, sorted by name: the base's tensors minus the
  // scale_inv companions of selected FP8 tensors (merged tensors are not quantized).
  const std::vector<OutputTensorSpec>& outputs() const { return outputs_; }
  // nullptr if `name` is not an output tensor.
  const OutputTensorSpec* FindOutput(const std::string& name) const;

  // Merges one output tensor. NOT_FOUND for names outside outputs(); CANCELLED when `stop` is
  // requested; DATA_LOSS when a parent tensor holds NaN/inf; INVALID_ARGUMENT when the blend
  // overflows float32. Thread-safe (const).
  absl::StatusOr<MergedTensor> Merge(const std::string& name, std::stop_token stop = {}) const;

 private:
  TensorMerger() = default;
  Recipe recipe_;
  std::vector<const Checkpoint*> parents_;
  std::vector<float> lambdas_;  // recipe lambdas rounded to float32
  int base_ = 0;
  std::vector<OutputTensorSpec> outputs_;
};

// Progress of a multi-tensor merge.
struct MergeProgress {
  int64_t tensors_done = 0;
  int64_t tensors_total = 0;
  int64_t merged = 0;
  int64_t kept_by_delta = 0;
  int64_t copied = 0;
  uint64_t bytes_done = 0;   // output bytes produced
  uint64_t bytes_total = 0;
  std::string current;       // tensor just finished
  // "merging: 37/120 tensors (12.3/40.0 MB): 30 merged, 2 kept by delta, 5 copied"
  std::string ToString() const;
};
using MergeProgressCallback = std::function<void(const MergeProgress&)>;

// The live-blend entry point: merges `names` (e.g. one expert shard's tensors) in order. Same
// bytes as the offline tool writes for those tensors.
absl::StatusOr<std::vector<MergedTensor>> MergeTensors(const TensorMerger& merger, std::span<const std::string> names,
                                                       const MergeProgressCallback& progress = nullptr,
                                                       std::stop_token stop = {});

// ||a - base||_F / ||base||_F accumulated in double (0 if both are zero, +inf if only base is).
double RelativeDistance(std::span<const float> a, std::span<const float> base);

}  // namespace expertmesh
