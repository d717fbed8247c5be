// MergeCheckpoint: the offline Assembly-of-Experts merge behind expertmesh-merge. Opens the
// recipe's parents, merges every tensor with TensorMerger and writes a complete checkpoint the way
// TNG published the Chimera models: config.json of the base parent, sharded safetensors + index,
// tokenizer files copied, and merge_report.json. Output goes to OUT_DIR.partial first and is
// renamed into place at the end, so a failed or cancelled merge leaves no half checkpoint.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/checkpoint.h"
#include "engine/merge/merge_report.h"
#include "engine/merge/recipe.h"
#include "engine/merge/tensor_merger.h"

namespace expertmesh {

struct CheckpointMergeOptions {
  uint64_t max_shard_bytes = 5'000'000'000;  // tensor bytes per shard (transformers' "5GB")
  MergeProgressCallback progress;
  std::stop_token stop;  // CANCELLED, partial output removed
};

// Opens every parent checkpoint of `recipe` in recipe order (NOT_FOUND/INVALID_ARGUMENT name the
// parent).
absl::StatusOr<std::vector<std::unique_ptr<Checkpoint>>> OpenParents(
    const Recipe& recipe, std::function<bool(const std::string&)> name_filter = nullptr);

// `out_dir` must not exist or be empty (ALREADY_EXISTS otherwise).
absl::StatusOr<MergeReport> MergeCheckpoint(const Recipe& recipe, const std::filesystem::path& out_dir,
                                            const CheckpointMergeOptions& options = {});

}  // namespace expertmesh
