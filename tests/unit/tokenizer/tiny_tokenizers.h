// Small hand-written tokenizer.json documents for the unit tests: a character-level BPE without
// pre-tokenizer or decoder, and a byte-level one (all 256 byte tokens, a few merges, special
// tokens), built with nlohmann::json so each test can tweak one field.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace expertmesh::testing_tokenizers {

using Json = nlohmann::json;

// vocab a b c ab bc abc (ids 0..5), merges in string form "a b", "ab c"; nothing else.
inline Json CharacterBpe() {
  return Json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
    "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
              "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5},
              "merges": ["a b", "ab c"]}
  })");
}

// The ByteLevel character of `byte` (e.g. ' ' -> "Ġ").
inline std::string ByteToken(unsigned char byte) {
  std::string token;
  AppendByteLevelEncoded(std::string(1, static_cast<char>(byte)), &token);
  return token;
}

// Byte-level BPE: byte b has id b; merges "Ġ t" (256) and "Ġt h" (257); added tokens
// <s> 258 and </s> 259 (special), <tool> 260 (not special); BOS/EOS template; ByteLevel decoder.
inline Json ByteLevelBpe() {
  Json vocab = Json::object();
  for (int byte = 0; byte < 256; ++byte) vocab[ByteToken(byte)] = byte;
  vocab["\xC4\xA0t"] = 256;   // "Ġt"
  vocab["\xC4\xA0th"] = 257;  // "Ġth"
  Json tokenizer = Json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null, "normalizer": null,
    "added_tokens": [
      {"id": 258, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
      {"id": 259, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
      {"id": 260, "content": "<tool>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "pair": [],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [258], "tokens": ["<s>"]},
                         "</s>": {"id": "</s>", "ids": [259], "tokens": ["</s>"]}}},
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false, "byte_fallback": false,
              "merges": [["\u0120", "t"], ["\u0120t", "h"]]}
  })");
  tokenizer["model"]["vocab"] = vocab;
  return tokenizer;
}

inline std::unique_ptr<Tokenizer> Load(const Json& json) {
  auto tokenizer = Tokenizer::FromJson(json.dump());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(tokenizer).value() : nullptr;
}

inline std::vector<int32_t> Encode(const Json& json, const std::string& text, bool add_special_tokens = true) {
  std::unique_ptr<Tokenizer> tokenizer = Load(json);
  if (!tokenizer) return {};
  auto ids = tokenizer->Encode(text, add_special_tokens);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

}  // namespace expertmesh::testing_tokenizers
