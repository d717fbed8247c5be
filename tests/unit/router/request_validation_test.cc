// ValidateRequest: every bad field is INVALID_ARGUMENT naming the field; good requests are
// tokenized with BOS and normalized (top_p 0 -> 1).
#include "router-svc/request_validation.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "tests/unit/router/router_test_support.h"

namespace expertmesh::router_service {
namespace {

const AttentionModelInfo kModel{.model_type = "deepseek_v3", .vocab_size = 1536, .max_position_embeddings = 64};

v1::GenerateRequest TextRequest(const std::string& text, uint32_t max_tokens = 8) {
  v1::GenerateRequest request;
  request.set_text(text);
  request.set_max_tokens(max_tokens);
  return request;
}

// Asserts INVALID_ARGUMENT whose message mentions `needle`.
void ExpectInvalid(const v1::GenerateRequest& request, const std::string& needle, RequestLimits limits = {}) {
  auto result = ValidateRequest(request, limits, kModel, BundledTokenizer());
  ASSERT_FALSE(result.ok()) << "accepted: " << request.ShortDebugString();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_NE(result.status().message().find(needle), std::string::npos)
      << "message '" << result.status().message() << "' should mention '" << needle << "'";
}

TEST(RequestValidationTest, TextPromptIsTokenizedWithBos) {
  v1::GenerateRequest request = TextRequest("Once upon a time", 5);
  request.mutable_sampling()->set_temperature(0.7f);
  request.mutable_sampling()->set_seed(42);
  request.add_stop("\n\n");
  auto validated = ValidateRequest(request, {}, kModel, BundledTokenizer());
  ASSERT_TRUE(validated.ok()) << validated.status();
  const auto expected = BundledTokenizer().Encode("Once upon a time");
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(validated->prompt_ids, *expected);
  EXPECT_EQ(validated->prompt_ids.front(), *BundledTokenizer().bos_id());
  EXPECT_EQ(validated->max_tokens, 5u);
  EXPECT_FLOAT_EQ(validated->sampling.temperature(), 0.7f);
  EXPECT_FLOAT_EQ(validated->sampling.top_p(), 1.0f) << "top_p 0 means no nucleus cut";
  EXPECT_EQ(validated->sampling.seed(), 42u);
  EXPECT_EQ(validated->stop, std::vector<std::string>{"\n\n"});
}

TEST(RequestValidationTest, TokenIdsAreUsedAsTheyAre) {
  v1::GenerateRequest request;
  for (int id : {5, 0, 1535}) request.mutable_token_ids()->add_ids(id);
  request.set_max_tokens(1);
  auto validated = ValidateRequest(request, {}, kModel, BundledTokenizer());
  ASSERT_TRUE(validated.ok()) << validated.status();
  EXPECT_EQ(validated->prompt_ids, (std::vector<int32_t>{5, 0, 1535}));
}

TEST(RequestValidationTest, PromptProblems) {
  v1::GenerateRequest no_prompt;
  no_prompt.set_max_tokens(1);
  ExpectInvalid(no_prompt, "no prompt");
  ExpectInvalid(TextRequest(""), "empty");
  v1::GenerateRequest no_ids;
  no_ids.mutable_token_ids();
  no_ids.set_max_tokens(1);
  ExpectInvalid(no_ids, "empty");
  for (int bad : {1536, -1, 1 << 30}) {
    v1::GenerateRequest request;
    request.mutable_token_ids()->add_ids(3);
    request.mutable_token_ids()->add_ids(bad);
    request.set_max_tokens(1);
    ExpectInvalid(request, "position 1 is outside the vocabulary [0, 1536)");
  }
  ExpectInvalid(TextRequest(std::string("bad \xff utf-8")), "tokenize");
}

TEST(RequestValidationTest, LengthLimits) {
  ExpectInvalid(TextRequest("word word word word word word word word word word", 8), "at most 5",
                RequestLimits{.max_prompt_tokens = 5});
  // The model's context (64 positions) caps prompt + max_tokens.
  ExpectInvalid(TextRequest("Once upon a time", 63), "exceeds the model's context of 64");
  v1::GenerateRequest long_prompt;
  for (int i = 0; i < 64; ++i) long_prompt.mutable_token_ids()->add_ids(7);
  long_prompt.set_max_tokens(1);
  ExpectInvalid(long_prompt, "at most 63");
}

TEST(RequestValidationTest, MaxTokensAndSampling) {
  ExpectInvalid(TextRequest("hi", 0), "max_tokens must be at least 1");
  ExpectInvalid(TextRequest("hi", 9), "limit of 8", RequestLimits{.max_tokens_limit = 8});
  for (float bad : {-0.5f, std::nanf(""), std::numeric_limits<float>::infinity()}) {
    v1::GenerateRequest request = TextRequest("hi");
    request.mutable_sampling()->set_temperature(bad);
    ExpectInvalid(request, "temperature");
  }
  for (float bad : {-0.1f, 1.5f, std::nanf("")}) {
    v1::GenerateRequest request = TextRequest("hi");
    request.mutable_sampling()->set_top_p(bad);
    ExpectInvalid(request, "top_p");
  }
}

TEST(RequestValidationTest, StopStrings) {
  v1::GenerateRequest empty_stop = TextRequest("hi");
  empty_stop.add_stop("ok");
  empty_stop.add_stop("");
  ExpectInvalid(empty_stop, "stop[1] is empty");
  v1::GenerateRequest long_stop = TextRequest("hi");
  long_stop.add_stop(std::string(300, 'a'));
  ExpectInvalid(long_stop, "stop[0] has 300 bytes");
  v1::GenerateRequest many = TextRequest("hi");
  for (int i = 0; i < 17; ++i) many.add_stop("s");
  ExpectInvalid(many, "at most 16");
}

}  // namespace
}  // namespace expertmesh::router_service
