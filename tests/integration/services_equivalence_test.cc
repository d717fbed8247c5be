// Distributed equals monolithic: attention-svc in front of 1, 2 or 4 expert-svc shards produces
// the same tokens and logits (include_logits) as the model loaded in-process, for the V3, V2-Lite
// and FP8 fixtures. With one shard the expert sums happen in the same order: bitwise equal. With
// several, each shard sums its own experts and attention-svc adds the shard sums, so float32
// additions happen in a different order: equal within 1e-5 relative.
#include <cstdio>

#include "absl/strings/str_cat.h"

#include <gtest/gtest.h>

#include "tests/integration/reference_generation.h"
#include "tests/integration/service_cluster.h"

namespace expertmesh::testing {
namespace {

struct Case {
  std::string fixture;
  int shards;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrCat(info.param.fixture, "_", info.param.shards, "_shards");
}

class DistributedEqualsMonolithic : public ::testing::TestWithParam<Case> {};

TEST_P(DistributedEqualsMonolithic, TokensAndLogits) {
  const Case& c = GetParam();
  absl::StatusOr<const ReferenceModel*> loaded = SharedReferenceModel(SourcePath("tests/fixtures/" + c.fixture));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const ReferenceModel& reference = **loaded;
  ClusterOptions options;
  options.model_directory = SourcePath("tests/fixtures/" + c.fixture);
  options.num_shards = c.shards;
  auto cluster = ServiceCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();

  double worst = 0.0;
  for (const v1::SequenceRequest& request : EquivalenceRequests(reference.config().vocab_size)) {
    auto expected = reference.Generate(request);
    ASSERT_TRUE(expected.ok()) << expected.status();
    const GenerationOutput actual = RunGenerate((*cluster)->stub(), request);
    ASSERT_TRUE(actual.status.ok()) << actual.status.error_message();
    EXPECT_EQ(actual.tokens, expected->tokens);
    ASSERT_EQ(actual.logits.size(), expected->logits.size());
    for (size_t i = 0; i < actual.logits.size(); ++i) {
      const double difference = MaxRelativeDifference(actual.logits[i], expected->logits[i]);
      worst = std::max(worst, difference);
      if (c.shards == 1) {
        EXPECT_EQ(actual.logits[i], expected->logits[i]) << "token " << i << " differs by " << difference;
      } else {
        EXPECT_LE(difference, 1e-5) << "token " << i;
      }
    }
    ASSERT_TRUE(actual.has_usage);
    EXPECT_EQ(actual.usage.prompt_tokens(), static_cast<uint32_t>(request.prompt_ids_size()));
    EXPECT_EQ(actual.usage.completion_tokens(), expected->tokens.size());
    EXPECT_EQ(actual.usage.finish_reason(), expected->finish_reason);
    EXPECT_EQ(actual.usage.blend(), c.fixture);  // the shards' weight set: the checkpoint's name
    EXPECT_EQ(actual.usage.blend_version(), 1u);
    EXPECT_GT(actual.usage.time_to_first_token_seconds(), 0.0);
  }
  std::printf("%s with %d shard(s): max relative logit difference %.3g\n", c.fixture.c_str(), c.shards, worst);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DistributedEqualsMonolithic,
                         ::testing::Values(Case{"v3_tiny", 1}, Case{"v3_tiny", 2}, Case{"v3_tiny", 4},
                                           Case{"v2_lite_tiny", 1}, Case{"v2_lite_tiny", 2}, Case{"v2_lite_tiny", 4},
                                           Case{"v3_tiny_fp8", 1}, Case{"v3_tiny_fp8", 2}, Case{"v3_tiny_fp8", 4}),
                         CaseName);

TEST(DistributedBf16Wire, CloseToMonolithicButNotEqual) {
  absl::StatusOr<const ReferenceModel*> loaded = SharedReferenceModel(SourcePath("tests/fixtures/v3_tiny"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const ReferenceModel& reference = **loaded;
  ClusterOptions options;
  options.model_directory = SourcePath("tests/fixtures/v3_tiny");
  options.num_shards = 2;
  options.attention_flags = {"--wire-dtype=bf16"};
  auto cluster = ServiceCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const v1::SequenceRequest request = MakeRequest({3, 9, 27, 81}, 1);
  auto expected = reference.Generate(request);
  ASSERT_TRUE(expected.ok()) << expected.status();
  const GenerationOutput actual = RunGenerate((*cluster)->stub(), request);
  ASSERT_TRUE(actual.status.ok()) << actual.status.error_message();
  ASSERT_EQ(actual.logits.size(), 1u);
  // bf16 keeps 8 bits of mantissa: activations and expert outputs are rounded on the wire.
  const double difference = MaxRelativeDifference(actual.logits[0], expected->logits[0]);
  std::printf("bf16 wire: relative logit difference %.3g\n", difference);
  EXPECT_GT(difference, 0.0);
  EXPECT_LE(difference, 2e-2);
}

}  // namespace
}  // namespace expertmesh::testing
