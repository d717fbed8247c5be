// MergeReport bookkeeping and its JSON form.
#include "engine/merge/merge_report.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace expertmesh {

void MergeReport::Add(const MergedTensor& tensor) {
  tensors.push_back({tensor.name, tensor.origin, tensor.dtype, tensor.relative_distance});
  bytes_written += tensor.bytes.size();
  switch (tensor.origin) {
    case TensorOrigin::kMerged: ++merged; break;
    case TensorOrigin::kKeptByDelta: ++kept_by_delta; break;
    case TensorOrigin::kCopiedFromBase: ++copied; break;
  }
}

std::string MergeReport::ToJson() const {
  using Json = nlohmann::ordered_json;
  Json json;
  json["recipe"] = Json::parse(RecipeToJson(recipe));
  json["lambda_sum"] = recipe.LambdaSum();
  json["counts"] = {{"merged", merged}, {"kept_by_delta", kept_by_delta}, {"copied", copied}};
  json["bytes_written"] = bytes_written;
  json["seconds"] = seconds;
  json["shards"] = shard_files;
  Json entries = Json::array();
  for (const MergeReportEntry& entry : tensors) {
    Json item = {{"name", entry.name},
                 {"origin", std::string(TensorOriginName(entry.origin))},
                 {"dtype", std::string(DTypeName(entry.dtype))}};
    if (std::isnan(entry.relative_distance)) {
      item["relative_distance"] = nullptr;
    } else if (std::isinf(entry.relative_distance)) {
      item["relative_distance"] = "inf";
    } else {
      item["relative_distance"] = entry.relative_distance;
    }
    entries.push_back(std::move(item));
  }
  json["tensors"] = std::move(entries);
  return json.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string MergeReport::Summary() const {
  return absl::StrFormat("recipe '%s': %d merged, %d kept by delta, %d copied; %.1f MB in %d shard(s), %.1f s",
                         recipe.name, merged, kept_by_delta, copied, static_cast<double>(bytes_written) / 1e6,
                         shard_files.size(), seconds);
}

}  // namespace expertmesh
