// libFuzzer target: ParseShardIndex on arbitrary text. Traps when an accepted index maps a tensor
// to a shard name that could leave the checkpoint directory.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/format/shard_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<expertmesh::ShardIndex> index = expertmesh::ParseShardIndex(text, "fuzz.index.json");
  if (!index.ok()) return 0;
  if (index->weight_map.empty()) __builtin_trap();
  for (const auto& [tensor, shard] : index->weight_map) {
    if (tensor.empty() || shard.empty() || shard == "." || shard == "..") __builtin_trap();
    if (shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos) __builtin_trap();
  }
  return 0;
}
