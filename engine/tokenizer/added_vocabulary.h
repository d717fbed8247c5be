// AddedVocabulary: the "added_tokens" of tokenizer.json (special tokens such as BOS/EOS and any
// other added tokens). Owns the token table and finds the tokens in raw input text before
// pre-tokenization, as HF does: leftmost-longest matching, non-normalized tokens first, then
// normalized ones, honouring single_word, lstrip and rstrip.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/regex_pattern.h"
#include "nlohmann/json_fwd.hpp"

namespace expertmesh {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool single_word = false;  // only match when not inside a word
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool normalized = true;    // matched after normalization (we support no normalizer, so: second pass)
};

// A stretch of input text: either plain text for the pre-tokenizer (token_id < 0) or one added token.
struct TextSegment {
  std::string_view text;
  int32_t token_id = -1;
};

class AddedVocabulary {
 public:
  // `config` is the "added_tokens" list (null: none). An added token whose content is in the model
  // vocabulary must carry that id; others must not reuse a model id. INVALID_ARGUMENT otherwise.
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& config, const BpeModel& model);

  // Splits `text` into plain-text segments and added tokens, in order; empty text gives nothing.
  std::vector<TextSegment> Split(std::string_view text) const;

  std::optional<int32_t> TokenToId(std::string_view content) const;
  const AddedToken* FindById(int32_t id) const;
  bool IsSpecialId(int32_t id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  // One past the largest added-token id (0 when there are none).
  int32_t id_limit() const { return id_limit_; }

 private:
  // Candidate tokens (indices into tokens_) grouped by first byte, longest first.
  struct Matcher {
    std::array<std::vector<int32_t>, 256> by_first_byte;
    std::array<bool, 256> is_first_byte{};  // some token starts with this byte
    bool empty = true;
  };
  struct Match {
    size_t start, end;
    int32_t token_index;
  };
  std::vector<Match> FindLeftmostLongest(const Matcher& matcher, std::string_view text) const;
  void SplitWith(const Matcher& matcher, std::string_view text, std::vector<TextSegment>* out) const;
  bool IsWordCharacter(std::string_view character) const;  // one UTF-8 character

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<std::string, int32_t> content_to_index_;
  absl::flat_hash_map<int32_t, int32_t> id_to_index_;
  Matcher non_normalized_;
  Matcher normalized_;
  int32_t id_limit_ = 0;
  std::optional<RegexPattern> word_character_;  // Rust regex's \w, compiled when single_word is used
};

}  // namespace expertmesh
