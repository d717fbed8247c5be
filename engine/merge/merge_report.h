// MergeReport: what a checkpoint merge did — the recipe, and per output tensor whether it was
// merged, kept by the delta rule or copied from the base parent, with its relative distance.
// Written next to the merged weights as merge_report.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/core/dtype.h"
#include "engine/merge/recipe.h"
#include "engine/merge/tensor_merger.h"

namespace expertmesh {

struct MergeReportEntry {
  std::string name;
  TensorOrigin origin = TensorOrigin::kMerged;
  DType dtype = DType::kBF16;
  double relative_distance = 0.0;  // NaN for copied tensors
};

struct MergeReport {
  Recipe recipe;
  std::vector<MergeReportEntry> tensors;
  std::vector<std::string> shard_files;
  int64_t merged = 0;
  int64_t kept_by_delta = 0;
  int64_t copied = 0;
  uint64_t bytes_written = 0;
  double seconds = 0.0;

  void Add(const MergedTensor& tensor);
  // {"recipe": {...}, "counts": {...}, "lambda_sum": x, "shards": [...], "tensors": [{name, origin,
  // dtype, relative_distance}...]} — distances of copied tensors are null.
  std::string ToJson() const;
  // "recipe 'x': 96 merged, 0 kept by delta, 34 copied; 7.3 MB in 1 shard(s), 0.4 s"
  std::string Summary() const;
};

}  // namespace expertmesh
