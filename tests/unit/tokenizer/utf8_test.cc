// UTF-8 helpers: strict validation and lossy decoding. Expected strings are what Python's
// bytes.decode('utf-8', 'replace') returns (same maximal-subpart rule as Rust's from_utf8_lossy).
#include "engine/tokenizer/utf8.h"

#include <string>

#include "engine/tokenizer/byte_level.h"
#include "gtest/gtest.h"

namespace expertmesh {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";

std::string Lossy(const std::string& bytes) {
  std::string out;
  EXPECT_EQ(AppendUtf8Lossy(bytes, /*hold_incomplete_tail=*/false, &out), bytes.size());
  return out;
}

TEST(Utf8Test, LossyDecodingReplacesMaximalInvalidSubsequences) {
  EXPECT_EQ(Lossy("\xF0\x9F\x98"), kReplacement);                          // truncated 4-byte: one
  EXPECT_EQ(Lossy("\xE0\x80"), kReplacement + kReplacement);               // overlong lead, then stray
  EXPECT_EQ(Lossy("\xED\xA0\x80"), kReplacement + kReplacement + kReplacement);  // surrogate
  EXPECT_EQ(Lossy("\xC0\xAF"), kReplacement + kReplacement);
  EXPECT_EQ(Lossy("a\xFF" "b"), "a" + kReplacement + "b");
  EXPECT_EQ(Lossy("\xF4\x90\x80\x80"), kReplacement + kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(Lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(Lossy("\xE2\x82\xAC\x80"), "\xE2\x82\xAC" + kReplacement);
  EXPECT_EQ(Lossy("\xF0\x9F\x98" "a"), kReplacement + "a");
  EXPECT_EQ(Lossy("\xC3"), kReplacement);
  EXPECT_EQ(Lossy("\xE2(\xA1"), kReplacement + "(" + kReplacement);
  EXPECT_EQ(Lossy(""), "");
}

TEST(Utf8Test, HoldingTheTailKeepsOnlyAnUnfinishedCharacter) {
  std::string out;
  EXPECT_EQ(AppendUtf8Lossy("ab\xF0\x9F\x98", true, &out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  // An invalid continuation is not "unfinished": it is replaced right away.
  EXPECT_EQ(AppendUtf8Lossy("ab\xF0\x9F" "c", true, &out), 5u);
  EXPECT_EQ(out, "ab" + kReplacement + "c");
  out.clear();
  EXPECT_EQ(AppendUtf8Lossy("\xE0\x80", true, &out), 2u);  // E0 80 can never complete
  EXPECT_EQ(out, kReplacement + kReplacement);
}

TEST(Utf8Test, ValidationIsStrict) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ASCII"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(Utf8Test, WhitespaceIsTheUnicodeProperty) {
  for (char32_t c : {U'\t', U'\n', U'\v', U'\f', U'\r', U' ', U'\u0085', U'\u00A0', U'\u2000', U'\u3000'}) {
    EXPECT_TRUE(IsUnicodeWhitespace(c)) << static_cast<uint32_t>(c);
  }
  for (char32_t c : {U'a', U'_', U'\u200B', U'\u180E', U'\u00AD'}) EXPECT_FALSE(IsUnicodeWhitespace(c));
}

TEST(ByteLevelTest, AlphabetIsGpt2sAndInvertible) {
  std::string encoded;
  AppendByteLevelEncoded(std::string("\x00 a\n\xFF", 5), &encoded);
  // GPT-2: byte 0 -> U+0100, space -> U+0120 (Ġ), 'a' -> 'a', newline -> U+010A (Ċ), 0xFF -> ÿ.
  EXPECT_EQ(encoded, "\xC4\x80\xC4\xA0" "a" "\xC4\x8A\xC3\xBF");
  for (int byte = 0; byte < 256; ++byte) {
    std::string character;
    AppendByteLevelEncoded(std::string(1, static_cast<char>(byte)), &character);
    EXPECT_EQ(ByteLevelDecodeToken(character), std::string(1, static_cast<char>(byte)));
  }
  EXPECT_EQ(ByteLevelDecodeToken("\xC4\xA0hello"), " hello");
  // A token with a character outside the alphabet decodes to its own UTF-8 bytes.
  EXPECT_EQ(ByteLevelDecodeToken("<\xEF\xBD\x9C" "end\xEF\xBD\x9C>"), "<\xEF\xBD\x9C" "end\xEF\xBD\x9C>");
  EXPECT_EQ(ByteLevelDecodeToken("a b"), "a b");  // ' ' itself is not in the alphabet
}

}  // namespace
}  // namespace expertmesh
