// Load-tester building blocks without a server: length distributions, blend mixes, the
// loopback-only target policy, option limits, request construction and percentile math.
#include <map>
#include <random>

#include "gtest/gtest.h"
#include "loadtest/blend_mix.h"
#include "loadtest/length_distribution.h"
#include "loadtest/load_options.h"
#include "loadtest/load_report.h"
#include "loadtest/load_runner.h"
#include "loadtest/target_policy.h"

namespace expertmesh::loadtest {
namespace {

TEST(LengthDistributionTest, ParsesAndSamplesEachForm) {
  std::mt19937_64 random(7);
  EXPECT_EQ(LengthDistribution::Parse("12")->Sample(random), 12);
  EXPECT_EQ(LengthDistribution::Parse("fixed:3")->Sample(random), 3);
  auto uniform = *LengthDistribution::Parse("uniform:10:20");
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) seen[uniform.Sample(random)]++;
  EXPECT_EQ(seen.begin()->first, 10);
  EXPECT_EQ(seen.rbegin()->first, 20);
  EXPECT_EQ(seen.size(), 11u);
  auto normal = *LengthDistribution::Parse("normal:5:50");  // wide: many draws clamp to 1
  double sum = 0;
  for (int i = 0; i < 2000; ++i) {
    int value = normal.Sample(random);
    EXPECT_GE(value, 1);
    sum += value;
  }
  EXPECT_GT(sum / 2000, 5);  // clamping at 1 lifts the mean
  auto exponential = *LengthDistribution::Parse("exponential:40");
  sum = 0;
  for (int i = 0; i < 20000; ++i) sum += exponential.Sample(random);
  EXPECT_NEAR(sum / 20000, 40, 2);
  EXPECT_EQ(uniform.ToString(), "uniform:10:20");
}

TEST(LengthDistributionTest, RejectsBadSpecs) {
  for (const char* bad : {"", "0", "-3", "2.5", "fixed", "fixed:x", "uniform:5", "uniform:9:3", "normal:0:1",
                          "normal:5:-1", "exponential:0", "poisson:3", "2000000", "nan"}) {
    EXPECT_EQ(LengthDistribution::Parse(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(BlendMixTest, DrawsByWeight) {
  auto mix = BlendMix::Parse("prose=3,code=1");
  ASSERT_TRUE(mix.ok());
  std::mt19937_64 random(3);
  std::map<std::string, int> counts;
  for (int i = 0; i < 20000; ++i) counts[mix->Pick(random)]++;
  EXPECT_NEAR(counts["prose"] / 20000.0, 0.75, 0.02);
  EXPECT_NEAR(counts["code"] / 20000.0, 0.25, 0.02);
  EXPECT_EQ(BlendMix::Parse("a,b")->entries().size(), 2u);
  EXPECT_TRUE(BlendMix::Parse("")->empty());
  for (const char* bad : {"=3", "a=0", "a=-1", "a=x", "a,a", "a=1=2", "a=inf"}) {
    EXPECT_EQ(BlendMix::Parse(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(TargetPolicyTest, OnlyLoopbackUnlessAllowed) {
  for (const char* loopback : {"127.0.0.1:50051", "127.9.9.9:1", "localhost:80", "[::1]:50051", "dns:///localhost:5",
                               "dns:127.0.0.1:5", "ipv4:127.0.0.1:5", "ipv6:[::1]:5", "unix:/tmp/router.sock",
                               "unix-abstract:router"}) {
    EXPECT_TRUE(CheckTargetAllowed(loopback, false, {}).ok()) << loopback;
  }
  for (const char* remote : {"10.0.0.1:50051", "example.com:443", "[2001:db8::1]:5", "dns:///router.prod:50051",
                             "0.0.0.0:50051", "128.0.0.1:1"}) {
    absl::Status status = CheckTargetAllowed(remote, false, {});
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << remote;
    EXPECT_NE(status.message().find("--allow-remote"), std::string::npos);
    EXPECT_TRUE(CheckTargetAllowed(remote, true, {}).ok()) << remote;
  }
  EXPECT_TRUE(CheckTargetAllowed("10.77.0.2:50051", false, {"10.77.0.2"}).ok());
  EXPECT_FALSE(CheckTargetAllowed("10.77.0.3:50051", false, {"10.77.0.2"}).ok());
  for (const char* malformed : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:99999", "::1:5",
                                "[::1]5", "unix:", "127.0.0.1:1,127.0.0.1:2"}) {
    EXPECT_EQ(CheckTargetAllowed(malformed, true, {}).code(), absl::StatusCode::kInvalidArgument) << malformed;
  }
}

LoadOptions Valid() {
  LoadOptions options;
  options.target = "127.0.0.1:50051";
  options.concurrency = 2;
  options.requests = 10;
  return options;
}

TEST(LoadOptionsTest, EveryRunIsBoundedAndShaped) {
  EXPECT_TRUE(ValidateLoadOptions(Valid()).ok());
  LoadOptions unbounded = Valid();
  unbounded.requests = 0;
  EXPECT_NE(ValidateLoadOptions(unbounded).message().find("bounded"), std::string::npos);
  LoadOptions both = Valid();
  both.rate = 5;
  EXPECT_FALSE(ValidateLoadOptions(both).ok());
  LoadOptions neither = Valid();
  neither.concurrency = 0;
  EXPECT_FALSE(ValidateLoadOptions(neither).ok());
  LoadOptions too_long = Valid();
  too_long.duration_seconds = kMaxDurationSeconds + 1;
  EXPECT_FALSE(ValidateLoadOptions(too_long).ok());
  LoadOptions too_many = Valid();
  too_many.requests = kMaxRequests + 1;
  EXPECT_FALSE(ValidateLoadOptions(too_many).ok());
  LoadOptions mix_and_keys = Valid();
  mix_and_keys.blend_mix = *BlendMix::Parse("prose");
  mix_and_keys.ab_keys = 3;
  EXPECT_FALSE(ValidateLoadOptions(mix_and_keys).ok());
  LoadOptions text_without_corpus = Valid();
  text_without_corpus.prompt_source = PromptSource::kText;
  EXPECT_FALSE(ValidateLoadOptions(text_without_corpus).ok());
  LoadOptions remote = Valid();
  remote.target = "192.168.1.5:50051";
  EXPECT_EQ(ValidateLoadOptions(remote).code(), absl::StatusCode::kPermissionDenied);
}

TEST(BuildRequestTest, FollowsTheOptions) {
  LoadOptions options = Valid();
  options.prompt_tokens = *LengthDistribution::Parse("fixed:9");
  options.max_tokens = *LengthDistribution::Parse("fixed:4");
  options.vocab_size = 50;
  options.min_token_id = 40;
  options.sampling_seed = 100;
  options.temperature = 0.5;
  options.stop = {"\n\n"};
  options.blend_mix = *BlendMix::Parse("code");
  std::mt19937_64 random(1);
  int prompt_tokens = 0;
  auto request = BuildRequest(options, 3, random, &prompt_tokens);
  EXPECT_EQ(prompt_tokens, 9);
  ASSERT_EQ(request.token_ids().ids_size(), 9);
  for (int id : request.token_ids().ids()) {
    EXPECT_GE(id, 40);
    EXPECT_LT(id, 50);
  }
  EXPECT_EQ(request.max_tokens(), 4u);
  EXPECT_EQ(request.sampling().seed(), 103u);
  EXPECT_FLOAT_EQ(request.sampling().temperature(), 0.5f);
  EXPECT_EQ(request.blend(), "code");
  EXPECT_EQ(request.stop_size(), 1);

  options.blend_mix = BlendMix();
  options.ab_keys = 2;
  options.prompt_source = PromptSource::kText;
  options.corpus_words = {"a", "b", "c"};
  options.prompt_tokens = *LengthDistribution::Parse("fixed:4");
  request = BuildRequest(options, 0, random, &prompt_tokens);
  EXPECT_TRUE(request.ab_key() == "loadtest-0" || request.ab_key() == "loadtest-1") << request.ab_key();
  EXPECT_TRUE(request.blend().empty());
  EXPECT_EQ(std::count(request.text().begin(), request.text().end(), ' '), 3);
}

TEST(SummarizeTest, NearestRankPercentiles) {
  std::vector<double> values;
  for (int i = 100; i >= 1; --i) values.push_back(i);
  LatencySummary summary = Summarize(values);
  EXPECT_EQ(summary.count, 100);
  EXPECT_EQ(summary.min, 1);
  EXPECT_EQ(summary.max, 100);
  EXPECT_EQ(summary.p50, 50);
  EXPECT_EQ(summary.p90, 90);
  EXPECT_EQ(summary.p99, 99);
  EXPECT_DOUBLE_EQ(summary.mean, 50.5);
  EXPECT_EQ(Summarize({}).count, 0);
  EXPECT_EQ(Summarize({3}).p99, 3);
}

TEST(RequestResultTest, TimePerOutputToken) {
  RequestResult result;
  result.end_to_end_seconds = 1.0;
  result.time_to_first_token_seconds = 0.2;
  result.generated_tokens = 5;
  EXPECT_DOUBLE_EQ(result.TimePerOutputToken(), 0.2);
  result.generated_tokens = 1;
  EXPECT_LT(result.TimePerOutputToken(), 0);
}

}  // namespace
}  // namespace expertmesh::loadtest
