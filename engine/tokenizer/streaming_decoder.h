// StreamingDecoder: incremental detokenization for generation. Add(token) returns the text that
// became complete — never half a UTF-8 character, although byte-level tokens can split one — and
// Finish() flushes the rest (invalid bytes as U+FFFD), so the concatenated output equals
// Tokenizer::Decode of all tokens. Owns only the pending bytes; borrows the Tokenizer.
#pragma once

#include <cstdint>
#include <string>

namespace expertmesh {

class Tokenizer;

class StreamingDecoder {
 public:
  // `tokenizer` must outlive this decoder.
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);

  // Text completed by `token_id`. Ids that are no token are dropped (HF's decode drops them too)
  // and counted in dropped_ids().
  std::string Add(int32_t token_id);
  // The remaining text; the decoder then starts a new stream.
  std::string Finish();

  int64_t dropped_ids() const { return dropped_ids_; }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  bool emitted_token_ = false;  // a token was added since the stream started (for the separator)
  std::string pending_;         // bytes of an unfinished UTF-8 character (at most 3)
  int64_t dropped_ids_ = 0;
};

}  // namespace expertmesh
