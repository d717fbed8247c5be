// Parsing of the post-processor variants into one single-sequence template, and applying it.
#include "engine/tokenizer/post_processor.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/json_fields.h"

namespace expertmesh {

using tokenizer_json::Child;
using tokenizer_json::Element;
using tokenizer_json::FieldError;
using tokenizer_json::FindMember;
using tokenizer_json::Json;

namespace {

// Bert/Roberta processors name their tokens as ["text", id].
absl::StatusOr<int32_t> TokenPairId(const Json& config, const char* key, const std::string& path,
                                    const std::function<bool(int32_t)>& id_exists) {
  const Json* pair = FindMember(config, key);
  const std::string field = Child(path, key);
  if (pair == nullptr || !pair->is_array() || pair->size() != 2 || !(*pair)[0].is_string() ||
      !(*pair)[1].is_number_integer()) {
    return FieldError(field, "must be [\"token\", id]");
  }
  const int64_t id = (*pair)[1].get<int64_t>();
  if (id < 0 || id > INT32_MAX || !id_exists(static_cast<int32_t>(id))) {
    return FieldError(field, absl::StrCat("id ", id, " is not a token id"));
  }
  return static_cast<int32_t>(id);
}

}  // namespace

absl::StatusOr<PostProcessor> PostProcessor::FromJson(const Json& config,
                                                      const std::function<bool(int32_t)>& id_exists) {
  PostProcessor processor;
  if (config.is_null()) return processor;
  absl::Status status = processor.AddProcessor(config, "post_processor", id_exists);
  if (!status.ok()) return status;
  return processor;
}

void PostProcessor::SetTemplate(std::vector<Piece> pieces) {
  has_template_ = true;
  single_ = std::move(pieces);
  size_t sequence = 0;
  while (sequence < single_.size() && !single_[sequence].is_sequence) ++sequence;
  if (sequence > 0 && single_[sequence - 1].ids.size() == 1) bos_id_ = single_[sequence - 1].ids[0];
  if (sequence + 1 < single_.size() && single_[sequence + 1].ids.size() == 1) eos_id_ = single_[sequence + 1].ids[0];
}

absl::Status PostProcessor::AddProcessor(const Json& config, const std::string& path,
                                         const std::function<bool(int32_t)>& id_exists) {
  absl::StatusOr<std::string> type = tokenizer_json::TypeOf(config, path);
  if (!type.ok()) return type.status();
  if (*type == "ByteLevel") return absl::OkStatus();  // trims offsets only
  if (*type == "Sequence") {
    const Json* list = FindMember(config, "processors");
    const std::string list_path = Child(path, "processors");
    if (list == nullptr || !list->is_array()) return FieldError(list_path, "must be a list of post-processors");
    for (size_t i = 0; i < list->size(); ++i) {
      absl::Status status = AddProcessor((*list)[i], Element(list_path, i), id_exists);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  if (has_template_) return FieldError(path, "only one template-like post-processor is supported");
  if (*type == "BertProcessing" || *type == "RobertaProcessing") {
    absl::StatusOr<int32_t> cls = TokenPairId(config, "cls", path, id_exists);
    if (!cls.ok()) return cls.status();
    absl::StatusOr<int32_t> sep = TokenPairId(config, "sep", path, id_exists);
    if (!sep.ok()) return sep.status();
    SetTemplate({Piece{false, {*cls}}, Piece{true, {}}, Piece{false, {*sep}}});
    return absl::OkStatus();
  }
  if (*type != "TemplateProcessing") {
    return FieldError(Child(path, "type"),
                      absl::StrCat("unsupported post-processor '", *type,
                                   "' (supported: TemplateProcessing, BertProcessing, RobertaProcessing, "
                                   "ByteLevel, Sequence)"));
  }
  const Json* special_tokens = FindMember(config, "special_tokens");
  const std::string special_path = Child(path, "special_tokens");
  if (special_tokens != nullptr && !special_tokens->is_object()) return FieldError(special_path, "must be an object");
  const Json* single = FindMember(config, "single");
  const std::string single_path = Child(path, "single");
  if (single == nullptr || !single->is_array()) return FieldError(single_path, "must be a list of template pieces");
  std::vector<Piece> pieces;
  int sequences = 0;
  for (size_t i = 0; i < single->size(); ++i) {
    const Json& entry = (*single)[i];
    const std::string entry_path = Element(single_path, i);
    if (const Json* sequence = FindMember(entry, "Sequence")) {
      const Json* id = FindMember(*sequence, "id");
      if (id == nullptr || !id->is_string() || id->get_ref<const std::string&>() != "A") {
        return FieldError(Child(entry_path, "Sequence.id"), "a single-sequence template can only use sequence \"A\"");
      }
      pieces.push_back({true, {}});
      ++sequences;
      continue;
    }
    const Json* special = FindMember(entry, "SpecialToken");
    if (special == nullptr) return FieldError(entry_path, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    absl::StatusOr<std::string> name = tokenizer_json::RequiredString(*special, "id", Child(entry_path, "SpecialToken"));
    if (!name.ok()) return name.status();
    const Json* definition = special_tokens == nullptr ? nullptr : FindMember(*special_tokens, *name);
    if (definition == nullptr) {
      return FieldError(entry_path, absl::StrCat("special token '", *name, "' is not defined in ", special_path));
    }
    const std::string definition_path = absl::StrCat(special_path, "[\"", *name, "\"].ids");
    const Json* ids = FindMember(*definition, "ids");
    if (ids == nullptr || !ids->is_array()) return FieldError(definition_path, "must be a list of ids");
    Piece piece;
    for (const Json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX ||
          !id_exists(static_cast<int32_t>(id.get<int64_t>()))) {
        return FieldError(definition_path, "holds an id that is not a token id");
      }
      piece.ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    pieces.push_back(std::move(piece));
  }
  if (sequences != 1) return FieldError(single_path, "must contain the sequence \"A\" exactly once");
  SetTemplate(std::move(pieces));
  return absl::OkStatus();
}

std::vector<int32_t> PostProcessor::Process(std::vector<int32_t> ids, bool add_special_tokens) const {
  if (!add_special_tokens || !has_template_) return ids;
  std::vector<int32_t> result;
  result.reserve(ids.size() + single_.size());
  for (const Piece& piece : single_) {
    if (piece.is_sequence) {
      result.insert(result.end(), ids.begin(), ids.end());
    } else {
      result.insert(result.end(), piece.ids.begin(), piece.ids.end());
    }
  }
  return result;
}

}  // namespace expertmesh
