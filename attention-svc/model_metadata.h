// End-of-sequence token ids of a checkpoint: config.json's and generation_config.json's
// "eos_token_id" (a number or a list), merged. ModelConfig carries only what changes the math,
// so the serving tier reads these itself.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"

namespace expertmesh::attention_service {

// Sorted, unique. Missing files or fields give no ids; malformed JSON or ids is INVALID_ARGUMENT.
absl::StatusOr<std::vector<int32_t>> ReadEosTokenIds(const std::filesystem::path& model_directory);

}  // namespace expertmesh::attention_service
