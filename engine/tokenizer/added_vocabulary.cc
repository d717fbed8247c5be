// Added-token table and HF-compatible matching of added tokens in raw text.
#include "engine/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/utf8.h"

namespace expertmesh {

using tokenizer_json::FieldError;
using tokenizer_json::FindMember;
using tokenizer_json::Json;

namespace {

// Rust regex's Unicode \w, which HF uses for single_word boundaries.
constexpr std::string_view kWordCharacterPattern = R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])";

// Byte length of the UTF-8 character that ends at `end` (text is valid UTF-8, end > 0).
size_t LengthOfCharacterBefore(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return end - start;
}

}  // namespace

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const Json& config, const BpeModel& model) {
  AddedVocabulary vocabulary;
  if (config.is_null()) return vocabulary;
  if (!config.is_array()) return FieldError("added_tokens", "must be a list");
  bool needs_word_boundaries = false;
  for (size_t i = 0; i < config.size(); ++i) {
    const Json& entry = config[i];
    const std::string path = tokenizer_json::Element("added_tokens", i);
    if (!entry.is_object()) return FieldError(path, "must be an object");
    AddedToken token;
    absl::StatusOr<std::string> content = tokenizer_json::RequiredString(entry, "content", path);
    if (!content.ok()) return content.status();
    token.content = *std::move(content);
    const Json* id = FindMember(entry, "id");
    if (id == nullptr || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() > INT32_MAX) {
      return FieldError(tokenizer_json::Child(path, "id"), "must be a non-negative 32-bit integer");
    }
    token.id = static_cast<int32_t>(id->get<int64_t>());
    struct Flag {
      const char* key;
      bool* value;
      bool default_value;
    };
    for (const Flag& flag : {Flag{"special", &token.special, false}, Flag{"single_word", &token.single_word, false},
                             Flag{"lstrip", &token.lstrip, false}, Flag{"rstrip", &token.rstrip, false},
                             Flag{"normalized", &token.normalized, true}}) {
      absl::StatusOr<bool> value = tokenizer_json::OptionalBool(entry, flag.key, flag.default_value, path);
      if (!value.ok()) return value.status();
      *flag.value = *value;
    }
    if (token.content.empty()) continue;  // HF ignores empty added tokens
    // HF gives an added token the model's id for the same text; a file that says otherwise is broken.
    if (std::optional<int32_t> model_id = model.TokenToId(token.content); model_id && *model_id != token.id) {
      return FieldError(path, absl::StrCat("'", token.content, "' has id ", token.id, " but id ", *model_id,
                                           " in model.vocab"));
    }
    if (const std::string* model_token = model.IdToToken(token.id);
        model_token != nullptr && *model_token != token.content) {
      return FieldError(path, absl::StrCat("id ", token.id, " of '", token.content, "' belongs to '",
                                           *model_token, "' in model.vocab"));
    }
    if (auto it = vocabulary.content_to_index_.find(token.content); it != vocabulary.content_to_index_.end()) {
      if (vocabulary.tokens_[it->second].id != token.id) {
        return FieldError(path, absl::StrCat("'", token.content, "' is listed twice with different ids"));
      }
      continue;
    }
    if (vocabulary.id_to_index_.contains(token.id)) {
      return FieldError(path, absl::StrCat("id ", token.id, " is used by two added tokens"));
    }
    const auto index = static_cast<int32_t>(vocabulary.tokens_.size());
    vocabulary.content_to_index_[token.content] = index;
    vocabulary.id_to_index_[token.id] = index;
    vocabulary.id_limit_ = std::max(vocabulary.id_limit_, token.id + 1);
    needs_word_boundaries |= token.single_word;
    Matcher& matcher = token.normalized ? vocabulary.normalized_ : vocabulary.non_normalized_;
    const auto first_byte = static_cast<unsigned char>(token.content[0]);
    matcher.by_first_byte[first_byte].push_back(index);
    matcher.is_first_byte[first_byte] = true;
    matcher.empty = false;
    vocabulary.tokens_.push_back(std::move(token));
  }
  for (Matcher* matcher : {&vocabulary.non_normalized_, &vocabulary.normalized_}) {
    for (std::vector<int32_t>& bucket : matcher->by_first_byte) {
      std::stable_sort(bucket.begin(), bucket.end(), [&](int32_t a, int32_t b) {
        return vocabulary.tokens_[a].content.size() > vocabulary.tokens_[b].content.size();
      });
    }
  }
  if (needs_word_boundaries) {
    absl::StatusOr<RegexPattern> word = RegexPattern::Compile(kWordCharacterPattern, false, "added_tokens");
    if (!word.ok()) return word.status();
    vocabulary.word_character_.emplace(std::move(word).value());
  }
  return vocabulary;
}

std::vector<AddedVocabulary::Match> AddedVocabulary::FindLeftmostLongest(const Matcher& matcher,
                                                                         std::string_view text) const {
  std::vector<Match> matches;
  if (matcher.empty) return matches;
  size_t position = 0;
  while (position < text.size()) {
    if (!matcher.is_first_byte[static_cast<unsigned char>(text[position])]) {
      ++position;
      continue;
    }
    const std::vector<int32_t>& bucket = matcher.by_first_byte[static_cast<unsigned char>(text[position])];
    bool found = false;
    for (int32_t index : bucket) {  // longest first
      const std::string& content = tokens_[index].content;
      if (text.compare(position, content.size(), content) == 0) {
        matches.push_back({position, position + content.size(), index});
        position += content.size();
        found = true;
        break;
      }
    }
    if (!found) ++position;
  }
  return matches;
}

bool AddedVocabulary::IsWordCharacter(std::string_view character) const {
  std::vector<std::pair<size_t, size_t>> matches;
  return word_character_ && word_character_->FindMatches(character, &matches).ok() && !matches.empty();
}

void AddedVocabulary::SplitWith(const Matcher& matcher, std::string_view text,
                                std::vector<TextSegment>* out) const {
  size_t consumed = 0;  // HF's start_offset
  for (const Match& match : FindLeftmostLongest(matcher, text)) {
    const AddedToken& token = tokens_[match.token_index];
    size_t start = match.start;
    size_t end = match.end;
    if (start < consumed) continue;  // swallowed by the previous token's rstrip
    if (token.single_word) {
      bool word_before = false;
      if (start > 0) {
        const size_t length = LengthOfCharacterBefore(text, start);
        word_before = IsWordCharacter(text.substr(start - length, length));
      }
      bool word_after = false;
      if (end < text.size()) {
        size_t length = 0;
        DecodeCodePoint(text, end, &length);
        word_after = IsWordCharacter(text.substr(end, length));
      }
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        const size_t length = LengthOfCharacterBefore(text, new_start);
        size_t decoded_length = 0;
        if (!IsUnicodeWhitespace(DecodeCodePoint(text, new_start - length, &decoded_length))) break;
        new_start -= length;
      }
      start = std::max(new_start, consumed);
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t length = 0;
        if (!IsUnicodeWhitespace(DecodeCodePoint(text, end, &length))) break;
        end += length;
      }
    }
    if (consumed < start) out->push_back({text.substr(consumed, start - consumed), -1});
    out->push_back({text.substr(start, end - start), token.id});
    consumed = end;
  }
  if (consumed < text.size()) out->push_back({text.substr(consumed), -1});
}

std::vector<TextSegment> AddedVocabulary::Split(std::string_view text) const {
  std::vector<TextSegment> first_pass;
  if (text.empty()) return first_pass;
  SplitWith(non_normalized_, text, &first_pass);
  if (normalized_.empty) return first_pass;
  std::vector<TextSegment> segments;
  segments.reserve(first_pass.size());
  for (const TextSegment& segment : first_pass) {
    if (segment.token_id >= 0) {
      segments.push_back(segment);
    } else {
      SplitWith(normalized_, segment.text, &segments);
    }
  }
  return segments;
}

std::optional<int32_t> AddedVocabulary::TokenToId(std::string_view content) const {
  auto it = content_to_index_.find(tokenizer_json::AsAbsl(content));
  if (it == content_to_index_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = id_to_index_.find(id);
  return it == id_to_index_.end() ? nullptr : &tokens_[it->second];
}

bool AddedVocabulary::IsSpecialId(int32_t id) const {
  const AddedToken* token = FindById(id);
  return token != nullptr && token->special;
}

}  // namespace expertmesh
