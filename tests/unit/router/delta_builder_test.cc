// DeltaBuilder with the bundled byte-level tokenizer: deltas are valid UTF-8 even when tokens
// split characters, concatenate to Tokenizer::Decode, and stop at (excluding) a stop string.
#include "router-svc/delta_builder.h"

#include <gtest/gtest.h>

#include "tests/unit/router/router_test_support.h"

namespace expertmesh::router_service {
namespace {

std::vector<int32_t> IdsWithoutBos(const std::string& text) {
  auto ids = BundledTokenizer().Encode(text, /*add_special_tokens=*/false);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(DeltaBuilderTest, DeltasAreWholeCharactersAndConcatenateToTheDecodedText) {
  const std::string text = "Naïve café: 日本語のテキスト — ünïcödé ✓ and plain words.";
  const std::vector<int32_t> ids = IdsWithoutBos(text);
  ASSERT_GT(ids.size(), 10u);
  DeltaBuilder builder(BundledTokenizer(), {});
  std::string streamed;
  int deltas_without_text = 0;
  for (int32_t id : ids) {
    const v1::TokenDelta delta = builder.Add(id);
    ASSERT_EQ(delta.token_ids_size(), 1);
    EXPECT_EQ(delta.token_ids(0), id);
    EXPECT_TRUE(IsValidUtf8(delta.text())) << "delta ends inside a UTF-8 character after id " << id;
    deltas_without_text += delta.text().empty() ? 1 : 0;
    streamed += delta.text();
  }
  const v1::TokenDelta last = builder.Finish();
  EXPECT_EQ(last.token_ids_size(), 0);
  streamed += last.text();
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(streamed, *BundledTokenizer().Decode(ids));
  EXPECT_GT(deltas_without_text, 0) << "this text should make the tokenizer split a character across tokens";
  EXPECT_FALSE(builder.stopped());
  EXPECT_EQ(builder.tokens_added(), static_cast<int>(ids.size()));
}

TEST(DeltaBuilderTest, StopStringEndsTheTextBeforeIt) {
  const std::vector<int32_t> ids = IdsWithoutBos("Hello there. The end is near, my friend.");
  DeltaBuilder builder(BundledTokenizer(), {"end is", "zebra"});
  std::string streamed;
  int added = 0;
  for (int32_t id : ids) {
    streamed += builder.Add(id).text();
    ++added;
    if (builder.stopped()) break;
  }
  EXPECT_TRUE(builder.stopped());
  EXPECT_LT(added, static_cast<int>(ids.size())) << "the generation should end at the stop string";
  EXPECT_EQ(streamed, "Hello there. The ");
  EXPECT_EQ(builder.Finish().text(), "");
  const v1::TokenDelta after = builder.Add(ids.back());
  EXPECT_EQ(after.token_ids_size(), 0);
  EXPECT_EQ(after.text(), "");
  EXPECT_EQ(builder.tokens_added(), added);
}

TEST(DeltaBuilderTest, TextHeldForAPossibleStopIsFlushedAtTheEnd) {
  const std::vector<int32_t> ids = IdsWithoutBos("It was the e");
  DeltaBuilder builder(BundledTokenizer(), {"end"});
  std::string streamed;
  for (int32_t id : ids) streamed += builder.Add(id).text();
  EXPECT_EQ(streamed, "It was the ") << "'e' may begin 'end' and waits";
  streamed += builder.Finish().text();
  EXPECT_EQ(streamed, "It was the e");
  EXPECT_FALSE(builder.stopped());
}

TEST(DeltaBuilderTest, SpecialTokensAddNoText) {
  const auto eos = BundledTokenizer().eos_id();
  ASSERT_TRUE(eos.has_value());
  DeltaBuilder builder(BundledTokenizer(), {});
  std::string streamed;
  for (int32_t id : IdsWithoutBos("Bye.")) streamed += builder.Add(id).text();
  const v1::TokenDelta end = builder.Add(*eos);
  EXPECT_EQ(end.token_ids(0), *eos);
  streamed += end.text() + builder.Finish().text();
  EXPECT_EQ(streamed, "Bye.");
}

}  // namespace
}  // namespace expertmesh::router_service
