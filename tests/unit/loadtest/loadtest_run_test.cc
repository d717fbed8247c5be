// LoadRunner against a real (fake) RouterService on loopback: closed-loop concurrency, open-loop
// arrivals independent of completions, limits and drain, status codes, blends and versions from
// usage events, client-side TTFT/TPOT, and the text/JSON/CSV reports.
#include <chrono>

#include "gtest/gtest.h"
#include "loadtest/load_report.h"
#include "loadtest/load_runner.h"
#include "nlohmann/json.hpp"
#include "tests/unit/loadtest/fake_router.h"

namespace expertmesh::loadtest {
namespace {

using testing::FakeRouterOptions;
using testing::FakeRouterServer;

LoadOptions Closed(const std::string& target, int concurrency, int64_t requests) {
  LoadOptions options;
  options.target = target;
  options.concurrency = concurrency;
  options.requests = requests;
  options.max_tokens = LengthDistribution::Fixed(5);
  options.prompt_tokens = LengthDistribution::Fixed(8);
  options.progress_interval_seconds = 0.05;
  return options;
}

TEST(LoadRunnerTest, ClosedLoopKeepsConcurrencyAndMeasuresTokens) {
  FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(20), .per_token = std::chrono::milliseconds(3)});
  LoadOptions options = Closed(server.address(), 4, 40);
  int progress_reports = 0;
  absl::StatusOr<RunResult> run = LoadRunner(options).Run([&](const Progress&) { ++progress_reports; });
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->requests.size(), 40u);
  EXPECT_EQ(server.router().requests(), 40);
  EXPECT_EQ(server.router().max_concurrent(), 4);
  EXPECT_GT(progress_reports, 0);
  for (const RequestResult& request : run->requests) {
    EXPECT_TRUE(request.ok()) << request.error_message;
    EXPECT_EQ(request.generated_tokens, 5);
    EXPECT_EQ(request.prompt_tokens, 8);
    // Bounds that causality guarantees however late the client's threads run: the first token
    // leaves the server >= 20 ms after the request arrived, the last one 4 x 3 ms later. (The gap
    // between first and last arrival has no such bound: a starved client may read them together.)
    EXPECT_GE(request.time_to_first_token_seconds, 0.020);
    EXPECT_GE(request.end_to_end_seconds, 0.032);
    EXPECT_LT(request.time_to_first_token_seconds, request.end_to_end_seconds);
    EXPECT_DOUBLE_EQ(request.TimePerOutputToken(),
                     (request.end_to_end_seconds - request.time_to_first_token_seconds) / 4);
    EXPECT_EQ(request.blend, "base");
    EXPECT_EQ(request.blend_version, 7u);
    EXPECT_EQ(request.finish_reason, "length");
  }
  LoadReport report = BuildReport(options, *run);
  EXPECT_EQ(report.succeeded, 40);
  EXPECT_EQ(report.generated_tokens, 200);
  EXPECT_EQ(report.status_codes.at("OK"), 40);
  ASSERT_EQ(report.blends.size(), 1u);
  EXPECT_EQ(report.blends[0].blend, "base");
  // 40 requests, 4 at a time, >= 32 ms each: at least 10 rounds.
  EXPECT_GE(run->wall_seconds, 0.32);
  EXPECT_NEAR(report.requests_per_second, 40 / run->wall_seconds, 1e-9);
  int64_t histogram_total = 0;
  for (const auto& bucket : report.end_to_end_histogram) histogram_total += bucket.count;
  EXPECT_EQ(histogram_total, 40);
}

TEST(LoadRunnerTest, BlendMixAndAbKeysReachTheRouter) {
  FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(1)});
  LoadOptions options = Closed(server.address(), 8, 200);
  options.blend_mix = *BlendMix::Parse("prose=1,code=1");
  absl::StatusOr<RunResult> run = LoadRunner(options).Run(nullptr);
  ASSERT_TRUE(run.ok());
  auto requested = server.router().blends_requested();
  EXPECT_EQ(requested["prose"] + requested["code"], 200);
  EXPECT_GT(requested["prose"], 60);
  EXPECT_GT(requested["code"], 60);
  LoadReport report = BuildReport(options, *run);
  ASSERT_EQ(report.blends.size(), 2u);
  std::map<std::string, uint64_t> versions;
  for (const BlendSummary& blend : report.blends) versions[blend.blend] = blend.version;
  EXPECT_EQ(versions["prose"], 3u);
  EXPECT_EQ(versions["code"], 1u);
  EXPECT_EQ(report.blends[0].requests + report.blends[1].requests, 200);

  FakeRouterServer keyed({.time_to_first_token = std::chrono::milliseconds(1)});
  LoadOptions ab = Closed(keyed.address(), 4, 60);
  ab.ab_keys = 5;
  ASSERT_TRUE(LoadRunner(ab).Run(nullptr).ok());
  EXPECT_LE(keyed.router().ab_keys().size(), 5u);
  EXPECT_GE(keyed.router().ab_keys().size(), 3u);
  EXPECT_TRUE(keyed.router().blends_requested().count("") == 1);
}

TEST(LoadRunnerTest, ErrorsAreCountedByCodeAndMessage) {
  FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(1), .fail_every = 4});
  LoadOptions options = Closed(server.address(), 1, 40);
  absl::StatusOr<RunResult> run = LoadRunner(options).Run(nullptr);
  ASSERT_TRUE(run.ok());
  LoadReport report = BuildReport(options, *run);
  EXPECT_EQ(report.failed, 10);
  EXPECT_EQ(report.status_codes.at("ResourceExhausted"), 10);
  EXPECT_EQ(report.errors.at("ResourceExhausted: admission queue full"), 10);
  EXPECT_EQ(report.end_to_end.count, 30);

  options.blend_mix = *BlendMix::Parse("nonexistent");
  options.requests = 3;
  run = LoadRunner(options).Run(nullptr);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(BuildReport(options, *run).status_codes.at("NotFound"), 3);
}

TEST(LoadRunnerTest, OpenLoopArrivalsDoNotWaitForCompletions) {
  // Each request takes >= 200 ms; 100 req/s for 0.5 s must still start ~50 requests, so about
  // 20 are in flight at once - a closed loop of concurrency 1 would have started 3.
  FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(200)});
  LoadOptions options;
  options.target = server.address();
  options.rate = 100;
  options.arrival = Arrival::kConstant;
  options.duration_seconds = 0.5;
  options.max_tokens = LengthDistribution::Fixed(1);
  absl::StatusOr<RunResult> run = LoadRunner(options).Run(nullptr);
  ASSERT_TRUE(run.ok());
  // Constant arrivals at 0, 10, ..., 490 ms: exactly 50, however late the sender wakes.
  EXPECT_EQ(run->requests.size(), 50u);
  EXPECT_GE(server.router().max_concurrent(), 10);
  EXPECT_EQ(run->skipped, 0);
  // Start times follow the schedule, 10 ms apart.
  EXPECT_NEAR(run->requests[10].start_seconds - run->requests[0].start_seconds, 0.1, 0.05);

  FakeRouterServer capped_server({.time_to_first_token = std::chrono::milliseconds(200)});
  options.target = capped_server.address();
  options.max_in_flight = 5;
  run = LoadRunner(options).Run(nullptr);
  ASSERT_TRUE(run.ok());
  EXPECT_LE(capped_server.router().max_concurrent(), 5);
  EXPECT_GT(run->skipped, 25);
  EXPECT_EQ(static_cast<int64_t>(run->requests.size()) + run->skipped, 50);
}

TEST(LoadRunnerTest, DurationLimitDrainAndCancellation) {
  FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(10), .per_token = std::chrono::milliseconds(10)});
  LoadOptions options = Closed(server.address(), 2, 0);
  options.duration_seconds = 0.3;
  options.max_tokens = LengthDistribution::Fixed(100);  // ~1 s per request
  options.drain_timeout_seconds = 0.1;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<RunResult> run = LoadRunner(options).Run(nullptr);
  ASSERT_TRUE(run.ok());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0.9);
  EXPECT_EQ(run->cancelled_at_end, 2);
  ASSERT_EQ(run->requests.size(), 2u);
  for (const RequestResult& request : run->requests) EXPECT_EQ(request.code, grpc::StatusCode::CANCELLED);

  std::atomic<bool> stop{true};  // stop requested before the start: nothing is sent
  options.duration_seconds = 10;
  run = LoadRunner(options).Run(nullptr, &stop);
  ASSERT_TRUE(run.ok());
  EXPECT_TRUE(run->interrupted);
  EXPECT_TRUE(run->requests.empty());
}

TEST(LoadRunnerTest, DeadlinesAndUnreachableTargetsAreErrors) {
  FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(300)});
  LoadOptions options = Closed(server.address(), 1, 2);
  options.request_timeout_seconds = 0.05;
  absl::StatusOr<RunResult> run = LoadRunner(options).Run(nullptr);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(BuildReport(options, *run).status_codes.at("DeadlineExceeded"), 2);

  LoadOptions nowhere = Closed("127.0.0.1:1", 1, 2);
  nowhere.request_timeout_seconds = 2;
  run = LoadRunner(nowhere).Run(nullptr);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(BuildReport(nowhere, *run).status_codes.at("Unavailable"), 2);

  LoadOptions remote = Closed("10.1.2.3:50051", 1, 1);
  EXPECT_EQ(LoadRunner(remote).Run(nullptr).status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(LoadReportTest, TextJsonAndCsv) {
  FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(2), .fail_every = 5});
  LoadOptions options = Closed(server.address(), 2, 10);
  options.blend_mix = *BlendMix::Parse("prose=1,code=1");
  absl::StatusOr<RunResult> run = LoadRunner(options).Run(nullptr);
  ASSERT_TRUE(run.ok());
  LoadReport report = BuildReport(options, *run);
  std::string text = FormatText(report);
  for (const char* part : {"Requests/sec:", "Tokens/sec:", "TTFT", "TPOT", "e2e", "[OK]   8 responses",
                           "[ResourceExhausted]   2 responses", "Response time histogram", "prose", "code"}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
  }
  nlohmann::json json = nlohmann::json::parse(FormatJson(report));
  EXPECT_EQ(json["count"], 10);
  EXPECT_EQ(json["failed"], 2);
  EXPECT_EQ(json["status_codes"]["OK"], 8);
  EXPECT_EQ(json["generated_tokens"], 40);
  EXPECT_GT(json["latency_seconds"]["time_to_first_token"]["p50"].get<double>(), 0.002);
  EXPECT_EQ(json["blends"].size(), report.blends.size());
  std::string csv = FormatRequestsCsv(*run);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 11);
  EXPECT_NE(csv.find(",ResourceExhausted,"), std::string::npos);
}

}  // namespace
}  // namespace expertmesh::loadtest
