// Loading tokenizer.json into its components, and the encode/decode pipelines.
#include "engine/tokenizer/tokenizer.h"

#include <exception>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/utf8.h"

namespace expertmesh {

using tokenizer_json::Child;
using tokenizer_json::FieldError;
using tokenizer_json::FindMember;
using tokenizer_json::Json;

namespace {

// End-of-text names used by common tokenizers, tried when the post-processor adds no EOS.
constexpr std::string_view kEndOfTextNames[] = {"<｜end▁of▁sentence｜>", "</s>", "<|endoftext|>",
                                                 "<|end_of_text|>", "<eos>"};

absl::Status CheckUnsupportedSections(const Json& root) {
  if (const Json* normalizer = FindMember(root, "normalizer"); normalizer != nullptr) {
    // An empty normalizer Sequence is as good as none.
    const Json* list = FindMember(*normalizer, "normalizers");
    const bool empty_sequence = normalizer->is_object() && normalizer->value("type", Json()) == "Sequence" &&
                                list != nullptr && list->is_array() && list->empty();
    if (!empty_sequence) {
      std::string type = "?";
      if (normalizer->is_object() && FindMember(*normalizer, "type") != nullptr &&
          (*normalizer)["type"].is_string()) {
        type = (*normalizer)["type"].get<std::string>();
      }
      return FieldError("normalizer", absl::StrCat("normalizer '", type, "' is not supported (only null)"));
    }
  }
  for (const char* section : {"truncation", "padding"}) {
    if (FindMember(root, section) != nullptr) {
      return FieldError(section, "is not supported (must be null)");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::filesystem::path& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("tokenizer file ", path.string(), " not found"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::UnavailableError(absl::StrCat("reading ", path.string(), " failed"));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = FromJson(text.str());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat(path.string(), ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text) {
  try {
    const Json root = Json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) return absl::InvalidArgumentError("tokenizer.json: not valid JSON");
    if (!root.is_object()) return absl::InvalidArgumentError("tokenizer.json: top level must be an object");
    absl::Status supported = CheckUnsupportedSections(root);
    if (!supported.ok()) return supported;

    auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer());
    const Json null_value;
    const Json* pre = FindMember(root, "pre_tokenizer");
    absl::StatusOr<PreTokenizer> pre_tokenizer = PreTokenizer::FromJson(pre ? *pre : null_value);
    if (!pre_tokenizer.ok()) return pre_tokenizer.status();
    tokenizer->pre_tokenizer_ = *std::move(pre_tokenizer);

    const Json* model = FindMember(root, "model");
    if (model == nullptr) return FieldError("model", "is missing");
    absl::StatusOr<std::unique_ptr<BpeModel>> bpe =
        BpeModel::FromJson(*model, /*byte_level_input=*/tokenizer->pre_tokenizer_.ends_with_byte_level());
    if (!bpe.ok()) return bpe.status();
    tokenizer->model_ = *std::move(bpe);

    const Json* added = FindMember(root, "added_tokens");
    absl::StatusOr<AddedVocabulary> added_tokens =
        AddedVocabulary::FromJson(added ? *added : null_value, *tokenizer->model_);
    if (!added_tokens.ok()) return added_tokens.status();
    tokenizer->added_tokens_ = *std::move(added_tokens);

    // Per-id decoded bytes; ids are dense up to the largest model or added id.
    Tokenizer& t = *tokenizer;
    t.id_limit_ = std::max(t.model_->id_limit(), t.added_tokens_.id_limit());
    t.token_bytes_.resize(t.id_limit_);
    t.id_present_.assign(t.id_limit_, false);
    const Json* decoder = FindMember(root, "decoder");
    bool byte_level_decoder = false;
    if (decoder != nullptr) {
      absl::StatusOr<std::string> type = tokenizer_json::TypeOf(*decoder, "decoder");
      if (!type.ok()) return type.status();
      if (*type != "ByteLevel") {
        return FieldError("decoder.type", absl::StrCat("unsupported decoder '", *type, "' (only ByteLevel or null)"));
      }
      byte_level_decoder = true;
    } else {
      t.token_separator_ = " ";  // HF joins the tokens with spaces when there is no decoder
    }
    for (int32_t id = 0; id < t.id_limit_; ++id) {
      std::optional<std::string> token = t.IdToToken(id);
      if (!token) continue;
      t.id_present_[id] = true;
      t.token_bytes_[id] = byte_level_decoder ? ByteLevelDecodeToken(*token) : *std::move(token);
    }

    const Json* post = FindMember(root, "post_processor");
    absl::StatusOr<PostProcessor> post_processor = PostProcessor::FromJson(
        post ? *post : null_value, [&t](int32_t id) { return id >= 0 && id < t.id_limit_ && t.id_present_[id]; });
    if (!post_processor.ok()) return post_processor.status();
    t.post_processor_ = *std::move(post_processor);

    t.eos_id_ = t.post_processor_.eos_id();
    for (std::string_view name : kEndOfTextNames) {
      if (t.eos_id_) break;
      std::optional<int32_t> id = t.added_tokens_.TokenToId(name);
      if (id && t.added_tokens_.IsSpecialId(*id)) t.eos_id_ = id;
    }
    return tokenizer;
  } catch (const std::exception& error) {  // nothing above should throw; never let it escape
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", error.what()));
  }
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text to encode is not valid UTF-8");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  PreTokenizedText pre_tokenized;
  std::vector<std::string_view> words;
  for (const TextSegment& segment : added_tokens_.Split(text)) {
    if (segment.token_id >= 0) {
      ids.push_back(segment.token_id);
      continue;
    }
    absl::Status status = pre_tokenizer_.Apply(segment.text, &pre_tokenized);
    if (!status.ok()) return status;
    words.clear();
    for (size_t i = 0; i < pre_tokenized.words.size(); ++i) words.push_back(pre_tokenized.word(i));
    model_->Tokenize(words, &ids);
  }
  return post_processor_.Process(std::move(ids), add_special_tokens);
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  bool first = true;
  for (int32_t id : ids) {
    const std::string* token = TokenBytes(id);
    if (token == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is not in the vocabulary [0, ", id_limit_, ")"));
    }
    if (skip_special_tokens && IsSpecialId(id)) continue;
    if (!first) bytes.append(token_separator_);
    first = false;
    bytes.append(*token);
  }
  std::string text;
  text.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*hold_incomplete_tail=*/false, &text);
  return text;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (std::optional<int32_t> id = added_tokens_.TokenToId(token)) return id;
  return model_->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* added = added_tokens_.FindById(id)) return added->content;
  if (const std::string* token = model_->IdToToken(id)) return *token;
  return std::nullopt;
}

const std::string* Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= id_limit_ || !id_present_[id]) return nullptr;
  return &token_bytes_[id];
}

}  // namespace expertmesh
