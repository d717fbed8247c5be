// Bad input: malformed or unsupported tokenizer.json documents give INVALID_ARGUMENT naming the
// field (never a crash), unreadable files give NOT_FOUND, and bad text/ids are rejected.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/tokenizer/tiny_tokenizers.h"

namespace expertmesh {
namespace {

using testing_tokenizers::ByteLevelBpe;
using testing_tokenizers::CharacterBpe;
using testing_tokenizers::Json;
using testing_tokenizers::Load;

// Expects FromJson(text) to fail with INVALID_ARGUMENT whose message contains `needle`.
void ExpectRejected(const std::string& text, const std::string& needle) {
  auto tokenizer = Tokenizer::FromJson(text);
  ASSERT_FALSE(tokenizer.ok()) << "accepted; expected an error mentioning " << needle;
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument) << tokenizer.status();
  EXPECT_NE(std::string(tokenizer.status().message()).find(needle), std::string::npos)
      << "message: " << tokenizer.status().message() << "\nexpected to mention: " << needle;
}
void ExpectRejected(const Json& json, const std::string& needle) { ExpectRejected(json.dump(), needle); }

TEST(MalformedTokenizerTest, NotJsonOrWrongShape) {
  ExpectRejected(std::string("{\"model\": "), "not valid JSON");
  ExpectRejected(std::string(""), "not valid JSON");
  ExpectRejected(std::string("[1, 2]"), "top level");
  Json json = CharacterBpe();
  json.erase("model");
  ExpectRejected(json, "model: is missing");
  json["model"] = "BPE";
  ExpectRejected(json, "model");
}

TEST(MalformedTokenizerTest, BadModel) {
  auto with = [](const char* pointer, const Json& value) {
    Json json = CharacterBpe();
    json[Json::json_pointer(pointer)] = value;
    return json;
  };
  ExpectRejected(with("/model/type", "WordPiece"), "model.type: unsupported model 'WordPiece'");
  ExpectRejected(with("/model/vocab", Json::array()), "model.vocab");
  ExpectRejected(with("/model/vocab/a", -1), "model.vocab[\"a\"]");
  ExpectRejected(with("/model/vocab/a", "zero"), "model.vocab[\"a\"]");
  ExpectRejected(with("/model/vocab/a", 1), "id 1 is used by both");
  ExpectRejected(with("/model/vocab/a", 2000000000), "too sparse");
  ExpectRejected(with("/model/merges", Json::object()), "model.merges");
  ExpectRejected(with("/model/merges/0", "a"), "model.merges[0]");
  ExpectRejected(with("/model/merges/1", "ab c d"), "model.merges[1]");
  ExpectRejected(with("/model/merges/1", Json::array({"ab"})), "model.merges[1]");
  ExpectRejected(with("/model/merges/1", Json::array({"ab", 3})), "model.merges[1]");
  ExpectRejected(with("/model/merges/0", "a x"), "model.merges[0]: merge token 'x' is not in the vocabulary");
  ExpectRejected(with("/model/merges/0", "c a"), "merge token 'ca' is not in the vocabulary");
  ExpectRejected(with("/model/unk_token", "<unk>"), "model.unk_token");
  ExpectRejected(with("/model/byte_fallback", true), "model.byte_fallback");
  ExpectRejected(with("/model/dropout", 0.1), "model.dropout");
  ExpectRejected(with("/model/dropout", 7), "model.dropout");
  ExpectRejected(with("/model/continuing_subword_prefix", "##"), "model.continuing_subword_prefix");
  ExpectRejected(with("/model/end_of_word_suffix", "</w>"), "model.end_of_word_suffix");
  ExpectRejected(with("/model/ignore_merges", "yes"), "model.ignore_merges");
  // Accepted variants: dropout 0, no merges at all.
  EXPECT_NE(Load(with("/model/dropout", 0.0)), nullptr);
  Json no_merges = CharacterBpe();
  no_merges["model"].erase("merges");
  EXPECT_NE(Load(no_merges), nullptr);
}

TEST(MalformedTokenizerTest, BadPreTokenizer) {
  Json json = CharacterBpe();
  json["pre_tokenizer"] = Json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "([a-z]"}, "behavior": "Isolated", "invert": false}]})");
  ExpectRejected(json, "pre_tokenizer.pretokenizers[0].pattern.Regex: bad regex at offset");
  json["pre_tokenizer"]["pretokenizers"][0]["pattern"] = Json{{"Regex", "a"}};
  json["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  ExpectRejected(json, "pre_tokenizer.pretokenizers[0].behavior: unknown split behavior 'Sideways'");
  json["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Isolated";
  json["pre_tokenizer"]["pretokenizers"][0]["pattern"] = Json{{"Glob", "a"}};
  ExpectRejected(json, "pre_tokenizer.pretokenizers[0].pattern");
  json["pre_tokenizer"]["pretokenizers"][0] = Json{{"type", "Metaspace"}, {"replacement", "_"}};
  ExpectRejected(json, "unsupported pre-tokenizer 'Metaspace'");
  json["pre_tokenizer"]["pretokenizers"] = 5;
  ExpectRejected(json, "pre_tokenizer.pretokenizers");
  json["pre_tokenizer"] = "ByteLevel";
  ExpectRejected(json, "pre_tokenizer");
  json["pre_tokenizer"] = Json{{"type", "ByteLevel"}, {"add_prefix_space", 1}};
  ExpectRejected(json, "pre_tokenizer.add_prefix_space");
}

TEST(MalformedTokenizerTest, UnsupportedSections) {
  Json json = CharacterBpe();
  json["normalizer"] = Json{{"type", "NFC"}};
  ExpectRejected(json, "normalizer 'NFC' is not supported");
  json["normalizer"] = Json{{"type", "Sequence"}, {"normalizers", Json::array()}};
  EXPECT_NE(Load(json), nullptr);  // an empty sequence normalizes nothing
  json["normalizer"] = nullptr;
  json["decoder"] = Json{{"type", "WordPiece"}, {"prefix", "##"}};
  ExpectRejected(json, "decoder.type: unsupported decoder 'WordPiece'");
  json["decoder"] = nullptr;
  json["truncation"] = Json{{"max_length", 8}};
  ExpectRejected(json, "truncation");
  json["truncation"] = nullptr;
  json["padding"] = Json{{"strategy", "BatchLongest"}};
  ExpectRejected(json, "padding");
}

TEST(MalformedTokenizerTest, BadAddedTokensAndTemplates) {
  Json json = ByteLevelBpe();
  json["added_tokens"] = Json::object();
  ExpectRejected(json, "added_tokens: must be a list");
  json = ByteLevelBpe();
  json["added_tokens"][0]["id"] = 5;  // id 5 is the vocabulary token of byte 5
  ExpectRejected(json, "added_tokens[0]: id 5 of '<s>' belongs to");
  json = ByteLevelBpe();
  json["added_tokens"][1]["id"] = 258;
  ExpectRejected(json, "added_tokens[1]: id 258 is used by two added tokens");
  json = ByteLevelBpe();
  json["added_tokens"][0]["content"] = "a";  // vocabulary token with id 97
  ExpectRejected(json, "added_tokens[0]: 'a' has id 258 but id 97 in model.vocab");
  json = ByteLevelBpe();
  json["added_tokens"][0].erase("content");
  ExpectRejected(json, "added_tokens[0].content: is missing");
  json = ByteLevelBpe();
  json["added_tokens"][2]["lstrip"] = "no";
  ExpectRejected(json, "added_tokens[2].lstrip");

  json = ByteLevelBpe();
  json["post_processor"]["single"][0]["SpecialToken"]["id"] = "<bos>";
  ExpectRejected(json, "special token '<bos>' is not defined");
  json = ByteLevelBpe();
  json["post_processor"]["special_tokens"]["<s>"]["ids"] = Json::array({9999});
  ExpectRejected(json, "post_processor.special_tokens[\"<s>\"].ids");
  json = ByteLevelBpe();
  json["post_processor"]["single"][1]["Sequence"]["id"] = "B";
  ExpectRejected(json, "sequence \"A\"");
  json = ByteLevelBpe();
  json["post_processor"]["single"].erase(1);
  ExpectRejected(json, "exactly once");
  json = ByteLevelBpe();
  json["post_processor"] = Json{{"type", "BertProcessing"}, {"sep", {"</s>", 4000}}, {"cls", {"<s>", 258}}};
  ExpectRejected(json, "post_processor.sep");
  json["post_processor"] = Json{{"type", "Magic"}};
  ExpectRejected(json, "unsupported post-processor 'Magic'");
}

TEST(MalformedTokenizerTest, FilesAndText) {
  auto missing = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto directory = Tokenizer::FromFile(std::filesystem::temp_directory_path());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kNotFound);

  auto tokenizer = Load(ByteLevelBpe());
  ASSERT_NE(tokenizer, nullptr);
  for (const std::string& bad : {std::string("ab\xFF"), std::string("\xC3"), std::string("\xED\xA0\x80")}) {
    EXPECT_EQ(tokenizer->Encode(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(tokenizer->Encode(std::string("nul \0 inside", 12)).ok());
}

// Corrupted copies of the real tokenizer.json (truncations and random byte edits) must load or
// fail cleanly, and whatever loads must encode and decode without crashing.
TEST(MalformedTokenizerTest, CorruptedRealFilesNeverCrash) {
  const char* source_dir = std::getenv("EXPERTMESH_SOURCE_DIR");
  const std::filesystem::path path =
      std::filesystem::path(source_dir ? source_dir : ".") / "models/tokenizer.json";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string original = buffer.str();
  for (size_t length : {size_t{0}, size_t{1}, original.size() / 3, original.size() / 2, original.size() - 2}) {
    EXPECT_FALSE(Tokenizer::FromJson(original.substr(0, length)).ok()) << length;
  }
  std::mt19937 random(1234);
  const std::string replacements = "{}[]\":,0123456789-aZ\\ \xC4\xFF";
  int loaded = 0;
  for (int trial = 0; trial < 80; ++trial) {
    std::string corrupted = original;
    const int edits = 1 + trial % 3;
    for (int edit = 0; edit < edits; ++edit) {
      corrupted[random() % corrupted.size()] = replacements[random() % replacements.size()];
    }
    auto tokenizer = Tokenizer::FromJson(corrupted);
    if (!tokenizer.ok()) {
      EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ++loaded;
    auto ids = (*tokenizer)->Encode("Hello, world! 123 <｜end▁of▁sentence｜> \xE4\xB8\xAD");
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_TRUE((*tokenizer)->Decode(*ids).ok());
  }
  EXPECT_GT(loaded, 0);  // some edits land in harmless places (e.g. inside token text)
}

// Structural corruption: any field or container of a valid document replaced by a value of
// another type (or removed). Every outcome must be a clean load or INVALID_ARGUMENT.
TEST(MalformedTokenizerTest, MistypedFieldsNeverCrash) {
  const Json original = ByteLevelBpe();
  std::vector<Json::json_pointer> pointers;
  const Json flat = original.flatten();
  for (auto it = flat.begin(); it != flat.end(); ++it) {
    const std::string path = it.key();
    Json::json_pointer pointer(path);
    // Only a sample of the 258 vocabulary entries; every other leaf and all their parents.
    if (path.starts_with("/model/vocab/") && path.size() % 16 != 0) continue;
    while (!pointer.empty()) {
      pointers.push_back(pointer);
      pointer = pointer.parent_pointer();
    }
  }
  const std::vector<Json> replacements = {nullptr, 0, -1, 1.5, "x", "", true, Json::array(), Json::object(),
                                          Json::array({"a", "b"}), Json{{"type", "Split"}}};
  int loaded = 0;
  for (const Json::json_pointer& pointer : pointers) {
    for (size_t r = 0; r <= replacements.size(); ++r) {
      Json corrupted = original;
      if (r == replacements.size()) {
        Json& parent = corrupted[pointer.parent_pointer()];
        if (parent.is_object()) parent.erase(pointer.back());
      } else {
        corrupted[pointer] = replacements[r];
      }
      auto tokenizer = Tokenizer::FromJson(corrupted.dump());
      if (!tokenizer.ok()) {
        ASSERT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument) << pointer.to_string();
        continue;
      }
      ++loaded;
      auto ids = (*tokenizer)->Encode("x the <s>\xE4\xB8\xAD 12");
      ASSERT_TRUE(ids.ok()) << pointer.to_string() << ": " << ids.status();
      EXPECT_TRUE((*tokenizer)->Decode(*ids).ok());
    }
  }
  EXPECT_GT(loaded, 0);
}

}  // namespace
}  // namespace expertmesh
