// ShardIndex: the parsed model.safetensors.index.json of a sharded checkpoint — which shard file
// holds each tensor. Shard names must be plain file names inside the checkpoint directory (no
// path separators, no "." or ".."), so an index cannot point outside it.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace expertmesh {

struct ShardIndex {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
};

// Parses the index JSON; errors (DATA_LOSS) name `index_label` and the offending tensor or shard.
absl::StatusOr<ShardIndex> ParseShardIndex(std::string_view json_text, std::string_view index_label);

}  // namespace expertmesh
