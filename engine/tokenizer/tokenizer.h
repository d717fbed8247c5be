// Tokenizer: a Hugging Face tokenizer.json (byte-level BPE, as shipped with DeepSeek-V2/V3) in
// C++, encoding and decoding exactly like HF `tokenizers`: added tokens are cut out of the raw
// text first, the rest is pre-tokenized (Split regexes, ByteLevel) and BPE-merged, and the
// post-processor adds BOS. Owns all parsed components; const methods are thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/post_processor.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/streaming_decoder.h"

namespace expertmesh {

class Tokenizer {
 public:
  // NOT_FOUND / UNAVAILABLE when the file cannot be read; INVALID_ARGUMENT (naming the field)
  // for malformed JSON or settings this implementation does not support.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::filesystem::path& path);
  // The same from the file's text (tests, embedded tokenizers).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json_text);

  // Token ids of `text` (must be valid UTF-8, else INVALID_ARGUMENT); with add_special_tokens the
  // post-processor's tokens (BOS for DeepSeek) are added.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens = true) const;

  // Text of `ids`; invalid UTF-8 produced by the byte-level tokens becomes U+FFFD (one per maximal
  // invalid subsequence). INVALID_ARGUMENT for an id that is no token.
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const;

  // One past the largest token id (vocabulary and added tokens).
  int32_t vocab_size() const { return id_limit_; }
  std::optional<int32_t> TokenToId(std::string_view token) const;
  std::optional<std::string> IdToToken(int32_t id) const;
  bool IsSpecialId(int32_t id) const { return added_tokens_.IsSpecialId(id); }
  // BOS: the token the post-processor puts before the text. EOS: the one it puts after, else a
  // special token with a well-known end-of-text name ("<｜end▁of▁sentence｜>", "</s>", ...).
  std::optional<int32_t> bos_id() const { return post_processor_.bos_id(); }
  std::optional<int32_t> eos_id() const { return eos_id_; }

  // The raw bytes token `id` contributes to decoded text; nullptr for an id that is no token.
  const std::string* TokenBytes(int32_t id) const;
  // What the decoder puts between two tokens: "" for ByteLevel, " " without a decoder (as HF).
  std::string_view token_separator() const { return token_separator_; }

 private:
  Tokenizer() = default;

  std::unique_ptr<BpeModel> model_;
  AddedVocabulary added_tokens_;
  PreTokenizer pre_tokenizer_;
  PostProcessor post_processor_;
  std::string token_separator_;
  std::vector<std::string> token_bytes_;  // by id
  std::vector<bool> id_present_;
  int32_t id_limit_ = 0;
  std::optional<int32_t> eos_id_;
};

}  // namespace expertmesh
