// Checks the tokenizer against tests/fixtures/tokenizer/cases.json: ids that HF tokenizers 0.23
// produced with models/tokenizer.json (DeepSeek-V3's pre-tokenizer), plus decode round trips and
// streaming decode == full decode on the same strings.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("EXPERTMESH_SOURCE_DIR");
  return dir ? std::filesystem::path(dir) : std::filesystem::current_path();
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

class ReferenceCasesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream in(SourceDir() / "tests/fixtures/tokenizer/cases.json");
    ASSERT_TRUE(in) << "missing tests/fixtures/tokenizer/cases.json";
    const nlohmann::json fixture = nlohmann::json::parse(in);
    tokenizer_path_ = new std::filesystem::path(SourceDir() / fixture["tokenizer"].get<std::string>());
    cases_ = new std::vector<Case>();
    for (const auto& entry : fixture["cases"]) {
      cases_->push_back({entry["text"].get<std::string>(), entry["ids"].get<std::vector<int32_t>>()});
    }
  }
  void SetUp() override {
    auto loaded = Tokenizer::FromFile(*tokenizer_path_);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = std::move(loaded).value();
  }
  static std::filesystem::path* tokenizer_path_;
  static std::vector<Case>* cases_;
  std::unique_ptr<Tokenizer> tokenizer_;
};
std::filesystem::path* ReferenceCasesTest::tokenizer_path_ = nullptr;
std::vector<Case>* ReferenceCasesTest::cases_ = nullptr;

bool ContainsSpecialTokenText(const std::string& text) {
  return text.find("<｜begin▁of▁sentence｜>") != std::string::npos ||
         text.find("<｜end▁of▁sentence｜>") != std::string::npos;
}

TEST_F(ReferenceCasesTest, FixtureIsNotTrivial) {
  EXPECT_EQ(cases_->size(), 50u);
  EXPECT_EQ(tokenizer_->vocab_size(), 1536);
  EXPECT_EQ(tokenizer_->bos_id(), 0);
  EXPECT_EQ(tokenizer_->eos_id(), 1);
}

TEST_F(ReferenceCasesTest, EncodeMatchesHuggingFaceIds) {
  for (const Case& c : *cases_) {
    auto ids = tokenizer_->Encode(c.text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c.ids) << "text: " << c.text;
  }
}

TEST_F(ReferenceCasesTest, WithoutSpecialTokensOnlyTheBosGoes) {
  for (const Case& c : *cases_) {
    auto ids = tokenizer_->Encode(c.text, /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    ASSERT_FALSE(c.ids.empty());
    EXPECT_EQ(*ids, std::vector<int32_t>(c.ids.begin() + 1, c.ids.end())) << "text: " << c.text;
  }
}

TEST_F(ReferenceCasesTest, DecodeRoundTrips) {
  for (const Case& c : *cases_) {
    // Keeping special tokens, every string comes back (no normalizer, byte-level BPE).
    auto kept = tokenizer_->Decode(c.ids, /*skip_special_tokens=*/false);
    ASSERT_TRUE(kept.ok()) << kept.status();
    EXPECT_EQ(*kept, "<｜begin▁of▁sentence｜>" + c.text);
    // Skipping them (the default), strings without inline special tokens come back unchanged.
    auto skipped = tokenizer_->Decode(c.ids);
    ASSERT_TRUE(skipped.ok()) << skipped.status();
    if (!ContainsSpecialTokenText(c.text)) {
      EXPECT_EQ(*skipped, c.text);
    }
  }
}

TEST_F(ReferenceCasesTest, StreamingDecodeEqualsFullDecode) {
  for (bool skip_special : {true, false}) {
    for (const Case& c : *cases_) {
      StreamingDecoder stream(*tokenizer_, skip_special);
      std::string streamed;
      for (int32_t id : c.ids) {
        const std::string piece = stream.Add(id);
        // Every emitted piece is whole UTF-8 on its own.
        auto check = tokenizer_->Encode(piece);
        EXPECT_TRUE(check.ok()) << "streamed piece is not valid UTF-8 in: " << c.text;
        streamed += piece;
      }
      streamed += stream.Finish();
      auto full = tokenizer_->Decode(c.ids, skip_special);
      ASSERT_TRUE(full.ok());
      EXPECT_EQ(streamed, *full) << "text: " << c.text;
    }
  }
}

TEST_F(ReferenceCasesTest, TokenLookupsAgree) {
  EXPECT_EQ(tokenizer_->TokenToId("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(tokenizer_->IdToToken(0), "<｜begin▁of▁sentence｜>");
  for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
    std::optional<std::string> token = tokenizer_->IdToToken(id);
    ASSERT_TRUE(token.has_value()) << id;
    EXPECT_EQ(tokenizer_->TokenToId(*token), id);
  }
  EXPECT_FALSE(tokenizer_->IdToToken(tokenizer_->vocab_size()).has_value());
  EXPECT_FALSE(tokenizer_->IdToToken(-1).has_value());
  EXPECT_FALSE(tokenizer_->TokenToId("no such token").has_value());
}

TEST_F(ReferenceCasesTest, HeldOutTextRoundTripsAndIsStable) {
  for (const char* name : {"models/eval/prose_heldout.txt", "models/eval/code_heldout.txt"}) {
    std::ifstream in(SourceDir() / name, std::ios::binary);
    ASSERT_TRUE(in) << name;
    std::stringstream buffer;
    buffer << in.rdbuf();
    const std::string text = buffer.str();
    auto ids = tokenizer_->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_GT(ids->size(), text.size() / 8);
    auto decoded = tokenizer_->Decode(*ids);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, text) << name;
    // The word cache must not change results: encoding twice gives the same ids.
    auto again = tokenizer_->Encode(text);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *ids);
  }
}

TEST_F(ReferenceCasesTest, ConcurrentEncodesAgreeWithSerialOnes) {
  std::vector<std::string> texts;
  for (const Case& c : *cases_) texts.push_back(c.text);
  // A fresh tokenizer: the threads race to fill the shared word cache.
  auto fresh = Tokenizer::FromFile(*tokenizer_path_);
  ASSERT_TRUE(fresh.ok());
  std::vector<std::vector<std::vector<int32_t>>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t index = (i + t * 7) % texts.size();  // different orders per thread
          auto ids = (*fresh)->Encode(texts[index]);
          if (round == 0) results[t].resize(texts.size());
          results[t][index] = ids.ok() ? *ids : std::vector<int32_t>{-1};
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (size_t t = 0; t < results.size(); ++t) {
    for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(results[t][i], (*cases_)[i].ids) << "thread " << t;
  }
}

}  // namespace
}  // namespace expertmesh
