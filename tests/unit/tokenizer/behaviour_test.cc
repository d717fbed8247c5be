// Behaviours the bundled tokenizer does not exercise, on small hand-written tokenizers: merge
// forms and ranks, ignore_merges, unk, Split behaviours and invert, ByteLevel options, added-token
// matching (HF's own added_vocabulary cases), post-processors, decoding and streaming.
#include <string>
#include <vector>

#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "tests/unit/tokenizer/tiny_tokenizers.h"

namespace expertmesh {
namespace {

using testing_tokenizers::ByteLevelBpe;
using testing_tokenizers::ByteToken;
using testing_tokenizers::CharacterBpe;
using testing_tokenizers::Encode;
using testing_tokenizers::Json;
using testing_tokenizers::Load;
using Ids = std::vector<int32_t>;

// ---- BPE model -------------------------------------------------------------------------------

TEST(BpeTest, MergesApplyByRankAndStringAndListFormsAgree) {
  Json strings = CharacterBpe();
  Json lists = CharacterBpe();
  lists["model"]["merges"] = Json::parse(R"([["a", "b"], ["ab", "c"]])");
  for (const Json& json : {strings, lists}) {
    EXPECT_EQ(Encode(json, "abc"), (Ids{5}));
    EXPECT_EQ(Encode(json, "abcab"), (Ids{5, 3}));
    EXPECT_EQ(Encode(json, "cba"), (Ids{2, 1, 0}));
  }
  // With "b c" ranked first, "abc" merges b+c and then nothing applies to (a, bc).
  Json reordered = CharacterBpe();
  reordered["model"]["merges"] = Json::parse(R"(["b c", "a b", "ab c"])");
  EXPECT_EQ(Encode(reordered, "abc"), (Ids{0, 4}));
  // "#version" header lines are skipped and do not take a rank.
  Json versioned = CharacterBpe();
  versioned["model"]["merges"] = Json::parse(R"(["#version: 0.2", "a b", "ab c"])");
  EXPECT_EQ(Encode(versioned, "abc"), (Ids{5}));
}

TEST(BpeTest, EqualRanksMergeLeftmostFirst) {
  Json json = CharacterBpe();
  json["model"]["vocab"]["aa"] = 6;
  json["model"]["merges"] = Json::parse(R"(["a a"])");
  EXPECT_EQ(Encode(json, "aaa"), (Ids{6, 0}));
  EXPECT_EQ(Encode(json, "aaaa"), (Ids{6, 6}));
}

TEST(BpeTest, ListFormAllowsTokensWithSpaces) {
  Json json = CharacterBpe();
  json["model"]["vocab"][" "] = 6;
  json["model"]["vocab"]["a "] = 7;
  json["model"]["merges"] = Json::parse(R"([["a", " "]])");
  EXPECT_EQ(Encode(json, "a a"), (Ids{7, 0}));
}

TEST(BpeTest, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  Json json = CharacterBpe();
  json["model"]["merges"] = Json::parse(R"(["a b"])");
  EXPECT_EQ(Encode(json, "abc"), (Ids{3, 2}));
  json["model"]["ignore_merges"] = true;
  EXPECT_EQ(Encode(json, "abc"), (Ids{5}));
  EXPECT_EQ(Encode(json, "abcc"), (Ids{3, 2, 2}));  // not a vocabulary word: merges as usual
}

TEST(BpeTest, UnknownCharactersAreDroppedOrBecomeUnk) {
  Json json = CharacterBpe();
  EXPECT_EQ(Encode(json, "axxc"), (Ids{0, 2}));  // HF drops them when there is no unk_token...
  EXPECT_EQ(Encode(json, "axxb"), (Ids{3}));     // ...and merges what is left
  json["model"]["vocab"]["<unk>"] = 6;
  json["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(Encode(json, "axxb"), (Ids{0, 6, 6, 1}));
  json["model"]["fuse_unk"] = true;
  EXPECT_EQ(Encode(json, "axxbx"), (Ids{0, 6, 1, 6}));
}

// ---- Split behaviours (HF's documented example "the-final--countdown" split on '-') ----------

std::vector<std::string> SplitWith(const Json& pre_tokenizer, const std::string& text) {
  auto parsed = PreTokenizer::FromJson(pre_tokenizer);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) return {};
  PreTokenizedText words;
  absl::Status status = parsed->Apply(text, &words);
  EXPECT_TRUE(status.ok()) << status;
  std::vector<std::string> result;
  for (size_t i = 0; i < words.words.size(); ++i) result.emplace_back(words.word(i));
  return result;
}

Json SplitConfig(const std::string& pattern_kind, const std::string& pattern, const std::string& behavior,
                 bool invert = false) {
  return Json{{"type", "Split"}, {"pattern", {{pattern_kind, pattern}}}, {"behavior", behavior}, {"invert", invert}};
}

TEST(SplitTest, AllDelimiterBehaviours) {
  using Words = std::vector<std::string>;
  const std::string text = "the-final--countdown";
  EXPECT_EQ(SplitWith(SplitConfig("String", "-", "Removed"), text), (Words{"the", "final", "countdown"}));
  EXPECT_EQ(SplitWith(SplitConfig("String", "-", "Isolated"), text),
            (Words{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(SplitWith(SplitConfig("String", "-", "MergedWithPrevious"), text),
            (Words{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(SplitWith(SplitConfig("String", "-", "MergedWithNext"), text),
            (Words{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(SplitWith(SplitConfig("String", "-", "Contiguous"), text), (Words{"the", "-", "final", "--", "countdown"}));
  // A String pattern is literal, a Regex pattern is not.
  EXPECT_EQ(SplitWith(SplitConfig("String", ".", "Removed"), "a.b"), (Words{"a", "b"}));
  EXPECT_EQ(SplitWith(SplitConfig("Regex", "-+", "Isolated"), text), (Words{"the", "-", "final", "--", "countdown"}));
}

TEST(SplitTest, InvertSwapsDelimitersAndContent) {
  using Words = std::vector<std::string>;
  const std::string text = "How are  you doing?";
  const Words expected{"How", "are", "you", "doing?"};
  EXPECT_EQ(SplitWith(SplitConfig("String", " ", "Removed"), text), expected);
  EXPECT_EQ(SplitWith(SplitConfig("Regex", "\\S+", "Removed", /*invert=*/true), text), expected);
  EXPECT_EQ(SplitWith(SplitConfig("Regex", "\\S+", "Isolated", true), text),
            (Words{"How", " ", "are", "  ", "you", " ", "doing?"}));
}

TEST(SplitTest, RangesOnEdgeCases) {
  using Ranges = std::vector<std::pair<size_t, size_t>>;
  // Empty matches never produce empty pieces; unmatched text is one piece.
  EXPECT_EQ(SplitRanges(3, {{1, 1}}, SplitBehavior::kIsolated, false), (Ranges{{0, 1}, {1, 3}}));
  EXPECT_EQ(SplitRanges(3, {}, SplitBehavior::kRemoved, false), (Ranges{{0, 3}}));
  EXPECT_EQ(SplitRanges(3, {}, SplitBehavior::kRemoved, true), (Ranges{}));
  EXPECT_EQ(SplitRanges(4, {{0, 2}, {2, 4}}, SplitBehavior::kContiguous, false), (Ranges{{0, 4}}));
  EXPECT_EQ(SplitRanges(0, {}, SplitBehavior::kIsolated, false), (Ranges{}));
}

TEST(SplitTest, EmptyRegexMatchesSplitEveryCharacter) {
  using Words = std::vector<std::string>;
  EXPECT_EQ(SplitWith(SplitConfig("Regex", "", "Isolated"), "ab\xC3\xA9"), (Words{"a", "b", "\xC3\xA9"}));
}

TEST(SplitTest, DigitsPreTokenizer) {
  using Words = std::vector<std::string>;
  Json individual{{"type", "Digits"}, {"individual_digits", true}};
  Json grouped{{"type", "Digits"}, {"individual_digits", false}};
  EXPECT_EQ(SplitWith(individual, "a123b"), (Words{"a", "1", "2", "3", "b"}));
  EXPECT_EQ(SplitWith(grouped, "a123b\xD9\xA3"), (Words{"a", "123", "b", "\xD9\xA3"}));
}

// ---- ByteLevel ---------------------------------------------------------------------------------

TEST(ByteLevelPreTokenizerTest, Gpt2RegexAndPrefixSpace) {
  using Words = std::vector<std::string>;
  Json byte_level{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  // As the last step, words stay raw bytes (the model reads them through the alphabet).
  EXPECT_EQ(SplitWith(byte_level, "I'm  fine!! 42x"), (Words{"I", "'m", " ", " fine", "!!", " 42", "x"}));
  byte_level["add_prefix_space"] = true;
  EXPECT_EQ(SplitWith(byte_level, "hello world"), (Words{" hello", " world"}));
  EXPECT_EQ(SplitWith(byte_level, " x"), (Words{" x"}));  // no second space
  byte_level["use_regex"] = false;
  EXPECT_EQ(SplitWith(byte_level, "hello world"), (Words{" hello world"}));
}

TEST(ByteLevelPreTokenizerTest, StepsAfterByteLevelSeeTheAlphabet) {
  using Words = std::vector<std::string>;
  Json sequence = Json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
      {"type": "Split", "pattern": {"String": "\u0120"}, "behavior": "Isolated", "invert": false}]})");
  EXPECT_EQ(SplitWith(sequence, "a b"), (Words{"a", "\xC4\xA0", "b"}));
}

TEST(ByteLevelTokenizerTest, EncodesBytesMergesAndTemplate) {
  const Json json = ByteLevelBpe();
  // "<s>" BOS, "x", "Ġth" (merged), "e", "</s>" EOS.
  EXPECT_EQ(Encode(json, "x the"), (Ids{258, 'x', 257, 'e', 259}));
  EXPECT_EQ(Encode(json, "x the", /*add_special_tokens=*/false), (Ids{'x', 257, 'e'}));
  // Multi-byte characters become their bytes when no merge covers them.
  EXPECT_EQ(Encode(json, "\xC3\xA9", false), (Ids{0xC3, 0xA9}));
  auto tokenizer = Load(json);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->bos_id(), 258);
  EXPECT_EQ(tokenizer->eos_id(), 259);
  EXPECT_EQ(tokenizer->vocab_size(), 261);
  EXPECT_EQ(tokenizer->TokenToId(ByteToken(' ')), ' ');
  EXPECT_EQ(tokenizer->IdToToken(260), "<tool>");
}

// ---- Added tokens ------------------------------------------------------------------------------

TEST(AddedTokensTest, MatchedBeforePreTokenizationLongestFirst) {
  Json json = ByteLevelBpe();
  json["added_tokens"].push_back({{"id", 261}, {"content", "<tool><s>"}, {"special", false}, {"normalized", false}});
  EXPECT_EQ(Encode(json, "a<s>b</s>", false), (Ids{'a', 258, 'b', 259}));
  EXPECT_EQ(Encode(json, "<tool><s>x", false), (Ids{261, 'x'}));
  EXPECT_EQ(Encode(json, "<tool>x", false), (Ids{260, 'x'}));
  EXPECT_EQ(Encode(json, "<to", false), (Ids{'<', 't', 'o'}));
}

struct Segment {
  std::string text;
  int32_t id;
  bool operator==(const Segment&) const = default;
};

std::vector<Segment> SplitAdded(const Json& added_tokens, const std::string& text) {
  auto model = BpeModel::FromJson(Json{{"type", "BPE"}, {"vocab", Json::object()}, {"merges", Json::array()}}, false);
  EXPECT_TRUE(model.ok());
  auto vocabulary = AddedVocabulary::FromJson(added_tokens, **model);
  EXPECT_TRUE(vocabulary.ok()) << vocabulary.status();
  std::vector<Segment> result;
  for (const TextSegment& segment : vocabulary->Split(text)) result.push_back({std::string(segment.text), segment.token_id});
  return result;
}

Json AddedToken(int id, const std::string& content, bool special, bool single_word = false, bool lstrip = false,
                bool rstrip = false) {
  return Json{{"id", id},         {"content", content}, {"special", special}, {"single_word", single_word},
              {"lstrip", lstrip}, {"rstrip", rstrip},   {"normalized", !special}};
}

// The expectations below are HF tokenizers' own added_vocabulary unit tests (lower-cased text,
// since those tests run a Lowercase normalizer).
TEST(AddedTokensTest, HuggingFaceOptionCases) {
  const Json tokens = Json::array({AddedToken(0, "my", false, false, true, true), AddedToken(1, "name", false),
                                   AddedToken(2, "ony", false, true), AddedToken(3, "[CLS]", true),
                                   AddedToken(4, "[SEP]", true)});
  EXPECT_EQ(SplitAdded(tokens, "[CLS] my name is anthony [SEP]"),
            (std::vector<Segment>{{"[CLS]", 3}, {" my ", 0}, {"name", 1}, {" is anthony ", -1}, {"[SEP]", 4}}));
}

TEST(AddedTokensTest, HuggingFaceSingleWordCases) {
  const Json mask = Json::array({AddedToken(0, "<mask>", false, true)});
  EXPECT_EQ(SplitAdded(mask, "<mask> my name <mask> a<mask> <mask>ony <mask>"),
            (std::vector<Segment>{{"<mask>", 0}, {" my name ", -1}, {"<mask>", 0}, {" a<mask> <mask>ony ", -1},
                                  {"<mask>", 0}}));
  // Punctuation is no word character; a combining mark is.
  EXPECT_EQ(SplitAdded(mask, "<mask>, <mask>- \xE2\x97\x8C\xCC\xB0<mask>"),
            (std::vector<Segment>{{"<mask>", 0}, {", ", -1}, {"<mask>", 0}, {"- \xE2\x97\x8C\xCC\xB0<mask>", -1}}));
}

TEST(AddedTokensTest, HuggingFaceUnicodeStripCases) {
  const Json mask = Json::array({AddedToken(0, "<mask>", false, true, true, true)});
  EXPECT_EQ(SplitAdded(mask, "hi <mask> there\t<mask>\t<mask>\xE2\x80\x80"),
            (std::vector<Segment>{{"hi", -1}, {" <mask> ", 0}, {"there", -1}, {"\t<mask>\t", 0},
                                  {"<mask>\xE2\x80\x80", 0}}));
}

// ---- Post-processors ---------------------------------------------------------------------------

TEST(PostProcessorTest, VariantsAndSequences) {
  Json json = ByteLevelBpe();
  json["post_processor"] = Json{{"type", "RobertaProcessing"}, {"sep", {"</s>", 259}}, {"cls", {"<s>", 258}},
                                {"trim_offsets", true}, {"add_prefix_space", false}};
  EXPECT_EQ(Encode(json, "x"), (Ids{258, 'x', 259}));
  json["post_processor"] = Json{{"type", "Sequence"},
                                {"processors", Json::array({Json{{"type", "ByteLevel"}, {"trim_offsets", false}},
                                                            ByteLevelBpe()["post_processor"]})}};
  EXPECT_EQ(Encode(json, "x"), (Ids{258, 'x', 259}));
  json["post_processor"] = nullptr;
  EXPECT_EQ(Encode(json, "x"), (Ids{'x'}));
  auto tokenizer = Load(json);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_FALSE(tokenizer->bos_id().has_value());
  EXPECT_EQ(tokenizer->eos_id(), 259);  // no template EOS: found by its well-known name "</s>"
  json["added_tokens"][1]["special"] = false;
  tokenizer = Load(json);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_FALSE(tokenizer->eos_id().has_value());  // only special tokens qualify
}

// ---- Decoding ----------------------------------------------------------------------------------

TEST(DecodeTest, SpecialTokensAndAddedTokensAndBadBytes) {
  auto tokenizer = Load(ByteLevelBpe());
  ASSERT_NE(tokenizer, nullptr);
  const Ids ids{258, 'x', 257, 'e', 260, 259};
  EXPECT_EQ(*tokenizer->Decode(ids), "x the<tool>");
  EXPECT_EQ(*tokenizer->Decode(ids, /*skip_special_tokens=*/false), "<s>x the<tool></s>");
  // Byte tokens that do not form UTF-8: one U+FFFD per maximal invalid subsequence.
  EXPECT_EQ(*tokenizer->Decode(Ids{'a', 0xF0, 0x9F, 'b', 0xFF}), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_EQ(*tokenizer->Decode(Ids{}), "");
  for (int32_t bad : {-1, 261, 1 << 30}) {
    auto decoded = tokenizer->Decode(Ids{'a', bad});
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(DecodeTest, WithoutDecoderTokensAreJoinedWithSpaces) {
  auto tokenizer = Load(CharacterBpe());
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(*tokenizer->Decode(Ids{5, 3, 2}), "abc ab c");  // HF: tokens.join(" ")
  StreamingDecoder stream(*tokenizer);
  std::string streamed;
  for (int32_t id : {5, 3, 2}) streamed += stream.Add(id);
  EXPECT_EQ(streamed + stream.Finish(), "abc ab c");
}

TEST(StreamingDecoderTest, NeverEmitsHalfACharacter) {
  auto tokenizer = Load(ByteLevelBpe());
  ASSERT_NE(tokenizer, nullptr);
  StreamingDecoder stream(*tokenizer);
  EXPECT_EQ(stream.Add(258), "");  // BOS skipped
  EXPECT_EQ(stream.Add('a'), "a");
  EXPECT_EQ(stream.Add(0xF0), "");
  EXPECT_EQ(stream.Add(0x9F), "");
  EXPECT_EQ(stream.Add(0x98), "");
  EXPECT_EQ(stream.Add(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(stream.Add(0xE2), "");
  EXPECT_EQ(stream.Add('b'), "\xEF\xBF\xBD" "b");  // the 0xE2 can no longer complete
  EXPECT_EQ(stream.Add(0xC3), "");
  EXPECT_EQ(stream.Add(1 << 20), "");  // not a token: dropped and counted
  EXPECT_EQ(stream.dropped_ids(), 1);
  EXPECT_EQ(stream.Finish(), "\xEF\xBF\xBD");  // unfinished at the end
  EXPECT_EQ(stream.Add('z'), "z");             // a new stream
  EXPECT_EQ(stream.Finish(), "");
}

TEST(StreamingDecoderTest, MatchesFullDecodeOnEveryPrefixOfMixedBytes) {
  auto tokenizer = Load(ByteLevelBpe());
  ASSERT_NE(tokenizer, nullptr);
  // Every split of a string mixing valid, truncated and invalid sequences with special tokens.
  const Ids ids{0xE4, 0xB8, 0xAD, 258, 0xF0, 0x9F, 'q', 0xED, 0xA0, 0x80, 260, 0xC3, 0xA9, 0xF4, 0x8F, 0xBF};
  for (size_t length = 0; length <= ids.size(); ++length) {
    const Ids prefix(ids.begin(), ids.begin() + length);
    for (bool skip : {true, false}) {
      StreamingDecoder stream(*tokenizer, skip);
      std::string streamed;
      for (int32_t id : prefix) streamed += stream.Add(id);
      streamed += stream.Finish();
      EXPECT_EQ(streamed, *tokenizer->Decode(prefix, skip)) << "length " << length;
    }
  }
}

}  // namespace
}  // namespace expertmesh
