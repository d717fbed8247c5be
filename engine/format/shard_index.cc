// ParseShardIndex: weight_map parsing and shard-name validation.
#include "engine/format/shard_index.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

using Json = nlohmann::json;

// A shard name is a plain file name: it cannot address anything outside the checkpoint directory.
bool IsPlainFileName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    if (c == '/' || c == '\\' || c == '\0') return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<ShardIndex> ParseShardIndex(std::string_view json_text, std::string_view index_name) {
  const std::string index_label(index_name);
  Json root;
  try {
    root = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::exception& error) {
    return absl::DataLossError(absl::StrCat(index_label, ": not valid JSON: ", error.what()));
  }
  if (!root.is_object()) return absl::DataLossError(absl::StrCat(index_label, ": must be a JSON object"));
  const auto map = root.find("weight_map");
  if (map == root.end() || !map->is_object()) {
    return absl::DataLossError(absl::StrCat(index_label, ": 'weight_map' must be an object of tensor -> file"));
  }
  ShardIndex index;
  for (auto it = map->begin(); it != map->end(); ++it) {
    if (it.key().empty()) return absl::DataLossError(absl::StrCat(index_label, ": weight_map has an empty tensor name"));
    if (!it.value().is_string()) {
      return absl::DataLossError(absl::StrCat(index_label, ": weight_map entry of tensor '", it.key(),
                                              "' must be a file name string"));
    }
    const std::string shard = it.value().get<std::string>();
    if (!IsPlainFileName(shard)) {
      return absl::DataLossError(absl::StrCat(index_label, ": tensor '", it.key(), "' names shard '", shard,
                                              "', which is not a plain file name in the checkpoint directory"));
    }
    index.weight_map.emplace(it.key(), shard);
  }
  if (index.weight_map.empty()) return absl::DataLossError(absl::StrCat(index_label, ": weight_map is empty"));
  return index;
}

}  // namespace expertmesh
