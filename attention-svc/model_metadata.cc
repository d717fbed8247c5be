// ReadEosTokenIds: eos_token_id from config.json and generation_config.json.
#include "attention-svc/model_metadata.h"

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace expertmesh::attention_service {
namespace {

absl::Status AddIds(const std::filesystem::path& file, std::set<int32_t>* ids) {
  std::ifstream stream(file);
  if (!stream) return absl::OkStatus();
  std::stringstream text;
  text << stream.rdbuf();
  const nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": not a JSON object"));
  }
  const auto field = json.find("eos_token_id");
  if (field == json.end() || field->is_null()) return absl::OkStatus();
  const nlohmann::json values = field->is_array() ? *field : nlohmann::json::array({*field});
  for (const nlohmann::json& value : values) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(file.string(), ": eos_token_id ", value.dump(),
                                                     " is not a token id"));
    }
    ids->insert(value.get<int32_t>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ReadEosTokenIds(const std::filesystem::path& model_directory) {
  std::set<int32_t> ids;
  for (const char* name : {"config.json", "generation_config.json"}) {
    if (absl::Status status = AddIds(model_directory / name, &ids); !status.ok()) return status;
  }
  return std::vector<int32_t>(ids.begin(), ids.end());
}

}  // namespace expertmesh::attention_service
