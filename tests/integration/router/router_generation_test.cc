// router-svc end to end: real expert-svc x2 (shards of models/prose), attention-svc and router-svc
// processes on loopback. Streamed tokens equal the in-process engine's greedy output, text deltas
// concatenate to the decoded text, stop strings, bad inputs, admission limits, deadlines and
// cancellation reaching attention-svc.
#include <future>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "engine/tokenizer/tokenizer.h"
#include "tests/integration/reference_generation.h"
#include "tests/integration/router/router_client.h"
#include "tests/integration/service_cluster.h"
#include "tests/unit/metrics/exposition_test_util.h"

namespace expertmesh::testing {
namespace {

constexpr char kPrompt[] = "The meaning of life is";

class RouterGenerationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Progress("starting expert-svc x2 and attention-svc");
    ClusterOptions options;
    options.model_directory = SourcePath("models/prose");
    options.num_shards = 2;
    auto cluster = ServiceCluster::Start(options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
    Progress("expert-svc x2 and attention-svc serving");
    auto tokenizer = Tokenizer::FromFile(SourcePath("models/tokenizer.json"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
    Progress("tokenizer loaded");
    auto reference = ReferenceModel::Load(SourcePath("models/prose"));
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = reference->release();
    Progress("reference model loaded");
    // Both routers start at once (each start waits for its health check).
    small_router_metrics_port_ = PickFreePort();
    auto small = std::async(std::launch::async, [] {
      return StartRouter("router-svc-small", {cluster_->attention().address()},
                         {"--max-running=1", "--max-waiting=1", "--max-tokens-limit=2000",
                          "--metrics-listen=127.0.0.1:" + std::to_string(small_router_metrics_port_)});
    });
    auto router = StartRouter("router-svc", {cluster_->attention().address()}, {"--max-tokens-limit=2000"});
    auto small_router = small.get();
    ASSERT_TRUE(router.ok()) << router.status();
    ASSERT_TRUE(small_router.ok()) << small_router.status();
    router_ = router->release();
    small_router_ = small_router->release();
    Progress("router-svc x2 serving");
  }
  static void Progress(const char* what) {
    static const auto start = std::chrono::steady_clock::now();
    std::fprintf(stderr, "[setup %.2fs] %s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), what);
  }
  static void TearDownTestSuite() {
    Progress("tearing down");
    if (router_) {
      EXPECT_EQ(router_->Terminate(), 0) << "router-svc should drain and exit 0 on SIGTERM";
    }
    if (small_router_) {
      EXPECT_EQ(small_router_->Terminate(), 0);
    }
    delete router_;
    delete small_router_;
    delete cluster_;
    delete reference_;
    delete tokenizer_;
    Progress("torn down");
  }

  std::vector<int32_t> Encode(const std::string& text) { return *tokenizer_->Encode(text); }
  std::vector<int32_t> ReferenceGreedy(const std::vector<int32_t>& prompt, uint32_t max_tokens) {
    auto output = reference_->Generate(MakeRequest(prompt, max_tokens, /*include_logits=*/false));
    EXPECT_TRUE(output.ok()) << output.status();
    return output.ok() ? output->tokens : std::vector<int32_t>{};
  }
  int AttentionRunning() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::AttentionDescription description;
    EXPECT_TRUE(cluster_->stub().Describe(&context, v1::DescribeAttentionRequest(), &description).ok());
    return static_cast<int>(description.running_sequences() + description.waiting_sequences());
  }

  // The small router's /metrics; nullopt when it cannot be read.
  static std::optional<metrics::testing::Exposition> SmallRouterMetrics() {
    auto response = metrics::testing::HttpGet(small_router_metrics_port_, "/metrics");
    if (!response.ok() || response->status != 200) return std::nullopt;
    auto exposition = metrics::testing::ParseExposition(response->body);
    if (!exposition.ok()) return std::nullopt;
    return *std::move(exposition);
  }
  static std::optional<double> SmallRouterWaiting() {
    auto exposition = SmallRouterMetrics();
    return exposition ? exposition->Value("expertmesh_requests_waiting") : std::nullopt;
  }
  // expertmesh_requests_total{finish_reason="rejected"} summed over blends.
  static double SmallRouterRejected() {
    double total = 0;
    if (auto exposition = SmallRouterMetrics()) {
      for (const auto& [key, value] : exposition->samples) {
        if (key.starts_with("expertmesh_requests_total{") && key.find("finish_reason=\"rejected\"") != std::string::npos) {
          total += value;
        }
      }
    }
    return total;
  }

  static inline Tokenizer* tokenizer_ = nullptr;
  static inline ReferenceModel* reference_ = nullptr;
  static inline ServiceCluster* cluster_ = nullptr;
  static inline ServiceProcess* router_ = nullptr;
  // --max-running 1 --max-waiting 1, for the admission tests.
  static inline ServiceProcess* small_router_ = nullptr;
  static inline int small_router_metrics_port_ = 0;
};

TEST_F(RouterGenerationTest, GreedyTextPromptMatchesTheInProcessEngine) {
  const std::vector<int32_t> expected = ReferenceGreedy(Encode(kPrompt), 32);
  ASSERT_EQ(expected.size(), 32u);
  RouterClient client(router_->address());
  const RouterOutput output = client.Generate(TextRequest(kPrompt, 32));
  ASSERT_TRUE(output.status.ok()) << output.status.error_message();
  EXPECT_EQ(output.ids, expected);
  EXPECT_EQ(output.text, *tokenizer_->Decode(expected));
  ASSERT_TRUE(output.has_usage);
  EXPECT_EQ(output.usage.prompt_tokens(), Encode(kPrompt).size());
  EXPECT_EQ(output.usage.completion_tokens(), 32u);
  EXPECT_EQ(output.usage.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_GT(output.usage.time_to_first_token_seconds(), 0.0);
  EXPECT_LT(output.usage.time_to_first_token_seconds(), 10.0);
  EXPECT_FALSE(output.usage.blend().empty()) << "attention reports the serving weight set";
}

TEST_F(RouterGenerationTest, TokenIdPromptAndSeededSamplingAreReproducible) {
  const std::vector<int32_t> prompt = Encode("Once upon a time");
  RouterClient client(router_->address());
  const RouterOutput greedy = client.Generate(IdsRequest(prompt, 16));
  ASSERT_TRUE(greedy.status.ok()) << greedy.status.error_message();
  EXPECT_EQ(greedy.ids, ReferenceGreedy(prompt, 16));

  v1::GenerateRequest sampled = IdsRequest(prompt, 16);
  sampled.mutable_sampling()->set_temperature(0.9f);
  sampled.mutable_sampling()->set_top_p(0.95f);
  sampled.mutable_sampling()->set_seed(1234);
  const RouterOutput first = client.Generate(sampled);
  const RouterOutput second = client.Generate(sampled);
  ASSERT_TRUE(first.status.ok() && second.status.ok());
  EXPECT_EQ(first.ids, second.ids);
  EXPECT_EQ(first.text, second.text);
}

TEST_F(RouterGenerationTest, StopStringEndsTheTextBeforeIt) {
  const std::vector<int32_t> expected = ReferenceGreedy(Encode(kPrompt), 48);
  const std::string full = *tokenizer_->Decode(expected);
  // A stop string taken from the middle of the greedy continuation.
  const size_t cut = full.find(" not");
  ASSERT_NE(cut, std::string::npos) << full;
  RouterClient client(router_->address());
  v1::GenerateRequest request = TextRequest(kPrompt, 48);
  request.add_stop(" not");
  request.add_stop("never produced");
  const RouterOutput output = client.Generate(request);
  ASSERT_TRUE(output.status.ok()) << output.status.error_message();
  EXPECT_EQ(output.text, full.substr(0, cut));
  EXPECT_EQ(output.usage.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_LT(output.ids.size(), expected.size());
  EXPECT_EQ(output.ids, std::vector<int32_t>(expected.begin(), expected.begin() + output.ids.size()));
  EXPECT_EQ(output.usage.completion_tokens(), output.ids.size());
}

TEST_F(RouterGenerationTest, BadInputsGetTheRightCodes) {
  RouterClient client(router_->address());
  std::vector<std::pair<v1::GenerateRequest, std::string>> cases;
  cases.push_back({TextRequest("", 8), "empty"});
  cases.push_back({TextRequest(kPrompt, 0), "max_tokens"});
  cases.push_back({TextRequest(kPrompt, 2001), "limit of 2000"});
  cases.push_back({IdsRequest({0, 5, 1536}, 8), "outside the vocabulary [0, 1536)"});
  cases.push_back({TextRequest(kPrompt, 8), "temperature"});
  cases.back().first.mutable_sampling()->set_temperature(-1.0f);
  cases.push_back({TextRequest(kPrompt, 8), "top_p"});
  cases.back().first.mutable_sampling()->set_top_p(2.0f);
  std::vector<int32_t> too_long(2048, 5);
  cases.push_back({IdsRequest(too_long, 1), "at most 2047"});
  for (const auto& [request, needle] : cases) {
    const RouterOutput output = client.Generate(request);
    EXPECT_EQ(output.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << needle;
    EXPECT_NE(output.status.error_message().find(needle), std::string::npos) << output.status.error_message();
    EXPECT_TRUE(output.ids.empty());
  }
  v1::GenerateRequest unknown_blend = TextRequest(kPrompt, 4);
  unknown_blend.set_blend("no-such-blend");
  const RouterOutput blend = client.Generate(unknown_blend);
  EXPECT_EQ(blend.status.error_code(), grpc::StatusCode::NOT_FOUND) << blend.status.error_message();
}

TEST_F(RouterGenerationTest, DeadlineDuringGenerationIsDeadlineExceeded) {
  RouterClient client(router_->address());
  const RouterOutput output = client.Generate(TextRequest(kPrompt, 1500), std::chrono::milliseconds(100));
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << output.status.error_message();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (AttentionRunning() > 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(AttentionRunning(), 0) << "the expired sequence should leave attention-svc's batch";
}

TEST_F(RouterGenerationTest, CancellationReachesAttention) {
  RouterClient client(router_->address());
  int running_while_streaming = -1;
  const RouterOutput output = client.Generate(TextRequest(kPrompt, 1500), std::chrono::seconds(30),
                                              [&](grpc::ClientContext& context) {
                                                running_while_streaming = AttentionRunning();
                                                context.TryCancel();
                                              });
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(running_while_streaming, 1);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (AttentionRunning() > 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(AttentionRunning(), 0) << "cancelling the public call should end the attention sequence";
}

TEST_F(RouterGenerationTest, AdmissionQueueFullAndDeadlineWhileWaiting) {
  RouterClient client(small_router_->address());
  std::promise<void> first_token;
  std::atomic<bool> release{false};
  auto running = std::async(std::launch::async, [&] {
    // Long enough to still be running when the other requests have been answered.
    return client.Generate(TextRequest(kPrompt, 2000), std::chrono::seconds(60), [&](grpc::ClientContext& context) {
      first_token.set_value();
      while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      context.TryCancel();
    });
  });
  first_token.get_future().wait();
  // The only running slot is taken: a waiter with a short deadline gives up in the queue.
  const RouterOutput late = client.Generate(TextRequest(kPrompt, 4), std::chrono::milliseconds(300));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << late.status.error_message();
  // The router drops that waiter at its own deadline, which a loaded machine can run after the
  // client has already seen the deadline pass; until then the single waiting place is still
  // taken. Wait for the router's gauge of waiting requests (set on every change) to read 0.
  const auto dropped_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::optional<double> waiting;
  while (std::chrono::steady_clock::now() < dropped_by) {
    waiting = SmallRouterWaiting();
    if (waiting == 0.0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (waiting != 0.0) {
    release.store(true);  // let the running request end before its future is joined
    FAIL() << "the timed-out waiter should leave the router's queue (waiting: "
           << (waiting ? std::to_string(*waiting) : "unreadable") << ")";
  }
  // Two more requests: whichever arrives second finds the single waiting place taken and is
  // refused at once, while the other waits for the running request.
  auto first = std::async(std::launch::async, [&] { return client.Generate(TextRequest(kPrompt, 4)); });
  auto second = std::async(std::launch::async, [&] { return client.Generate(TextRequest(kPrompt, 4)); });
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool one_finished = false;
  while (!one_finished && std::chrono::steady_clock::now() < give_up) {
    one_finished = first.wait_for(std::chrono::milliseconds(5)) == std::future_status::ready ||
                   second.wait_for(std::chrono::milliseconds(5)) == std::future_status::ready;
  }
  if (!one_finished) {
    release.store(true);  // let the running request end before the futures are joined
    FAIL() << "neither request was refused";
  }
  const bool first_refused = first.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  const RouterOutput refused = first_refused ? first.get() : second.get();
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.status.error_message();
  // The refused request (and the timed-out waiter, when it reached the router in time) counts as
  // rejected in the router's requests_total.
  EXPECT_GE(SmallRouterRejected(), 1.0);
  release.store(true);
  EXPECT_EQ(running.get().status.error_code(), grpc::StatusCode::CANCELLED);
  const RouterOutput admitted = first_refused ? second.get() : first.get();
  EXPECT_TRUE(admitted.status.ok()) << admitted.status.error_message();
  EXPECT_EQ(admitted.ids, ReferenceGreedy(Encode(kPrompt), 4));
}

}  // namespace
}  // namespace expertmesh::testing
