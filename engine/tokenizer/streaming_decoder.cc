// Incremental UTF-8-safe detokenization over Tokenizer::TokenBytes.
#include "engine/tokenizer/streaming_decoder.h"

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace expertmesh {

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string StreamingDecoder::Add(int32_t token_id) {
  const std::string* bytes = tokenizer_.TokenBytes(token_id);
  if (bytes == nullptr) {
    ++dropped_ids_;
    return "";
  }
  if (skip_special_tokens_ && tokenizer_.IsSpecialId(token_id)) return "";
  if (emitted_token_) pending_.append(tokenizer_.token_separator());
  emitted_token_ = true;
  pending_.append(*bytes);
  std::string text;
  const size_t consumed = AppendUtf8Lossy(pending_, /*hold_incomplete_tail=*/true, &text);
  pending_.erase(0, consumed);
  return text;
}

std::string StreamingDecoder::Finish() {
  std::string text;
  AppendUtf8Lossy(pending_, /*hold_incomplete_tail=*/false, &text);
  pending_.clear();
  emitted_token_ = false;
  return text;
}

}  // namespace expertmesh
