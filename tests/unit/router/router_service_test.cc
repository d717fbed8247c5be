// RouterServiceImpl served on loopback in front of scripted attention replicas (real gRPC both
// ways): streaming and usage, stop strings, validation, admission limits, deadlines, retry on an
// UNAVAILABLE replica, mid-stream failures, error pass-through and cancellation propagation.
#include "router-svc/router_service.h"

#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/router/fake_attention_service.h"
#include "tests/unit/router/router_test_support.h"

namespace expertmesh::router_service {
namespace {

const std::string kStory = "Once upon a time, there was a café by the sea. The end.";

std::vector<int32_t> StoryIds() {
  auto ids = BundledTokenizer().Encode(kStory, /*add_special_tokens=*/false);
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

struct Streamed {
  std::vector<int32_t> ids;
  std::string text;
  int deltas = 0;
  bool have_usage = false;
  v1::Usage usage;
  grpc::Status status;
};

class Router {
 public:
  explicit Router(std::vector<FakeAttentionService::Script> scripts, RouterOptions options = {}) {
    std::vector<std::string> addresses;
    for (auto& script : scripts) {
      replicas_.push_back(FakeReplica::Start(std::move(script)));
      addresses.push_back(replicas_.back()->address());
    }
    pool_ = AttentionPool::Create(addresses, {.probe_interval = std::chrono::milliseconds(100)});
    options.log_requests = false;
    service_ = std::make_unique<RouterServiceImpl>(BundledTokenizer(), *pool_, blends_, options);
    runner_ = *rpc::ServerRunner::Start({.listen_address = "127.0.0.1:0", .drain_grace = std::chrono::seconds(1)},
                                        {service_.get()}, "expertmesh.v1.RouterService");
    stub_ = v1::RouterService::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(runner_->port()),
                                                           grpc::InsecureChannelCredentials()));
  }
  ~Router() { runner_->Shutdown(); }

  FakeAttentionService& replica(int i) { return *replicas_[i]->service; }
  RouterServiceImpl& service() { return *service_; }
  AttentionPool& pool() { return *pool_; }

  // `context_setup` may set a deadline; `after_first_delta` runs once (e.g. to cancel).
  Streamed Call(const v1::GenerateRequest& request,
                std::chrono::milliseconds deadline = std::chrono::seconds(20),
                const std::function<void(grpc::ClientContext&)>& after_first_delta = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    Streamed streamed;
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_delta()) {
        streamed.ids.insert(streamed.ids.end(), response.delta().token_ids().begin(),
                            response.delta().token_ids().end());
        streamed.text += response.delta().text();
        EXPECT_TRUE(IsValidUtf8(response.delta().text()));
        EXPECT_FALSE(streamed.have_usage) << "usage must be the last event";
        if (streamed.deltas++ == 0 && after_first_delta) after_first_delta(context);
      } else if (response.has_usage()) {
        streamed.have_usage = true;
        streamed.usage = response.usage();
      }
    }
    streamed.status = reader->Finish();
    return streamed;
  }

 private:
  std::vector<std::unique_ptr<FakeReplica>> replicas_;
  std::unique_ptr<AttentionPool> pool_;
  PassThroughBlendSelector blends_;
  std::unique_ptr<RouterServiceImpl> service_;
  std::unique_ptr<rpc::ServerRunner> runner_;
  std::unique_ptr<v1::RouterService::Stub> stub_;
};

v1::GenerateRequest Request(const std::string& text, uint32_t max_tokens) {
  v1::GenerateRequest request;
  request.set_text(text);
  request.set_max_tokens(max_tokens);
  return request;
}

// Polls `condition` for up to 5 s.
bool Eventually(const std::function<bool()>& condition) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

TEST(RouterServiceTest, StreamsTokensTextAndUsage) {
  const std::vector<int32_t> story = StoryIds();
  Router router({{.tokens = story}});
  v1::GenerateRequest request = Request("Tell me a story", 1000);
  request.set_blend("prose-v2");
  const Streamed streamed = router.Call(request);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.ids, story);
  EXPECT_EQ(streamed.text, kStory);
  ASSERT_TRUE(streamed.have_usage);
  const auto prompt = BundledTokenizer().Encode("Tell me a story");
  EXPECT_EQ(streamed.usage.prompt_tokens(), prompt->size());
  EXPECT_EQ(streamed.usage.completion_tokens(), story.size());
  EXPECT_GT(streamed.usage.time_to_first_token_seconds(), 0.0);
  EXPECT_EQ(streamed.usage.blend(), "prose-v2");
  EXPECT_EQ(streamed.usage.blend_version(), 7u);
  EXPECT_EQ(streamed.usage.finish_reason(), v1::FINISH_REASON_STOP);

  const v1::SequenceRequest sent = router.replica(0).last_request();
  EXPECT_EQ(std::vector<int32_t>(sent.prompt_ids().begin(), sent.prompt_ids().end()), *prompt);
  EXPECT_EQ(sent.max_tokens(), 1000u);
  EXPECT_EQ(sent.blend(), "prose-v2");
  EXPECT_FLOAT_EQ(sent.sampling().top_p(), 1.0f);

  const Streamed short_one = router.Call(Request("Tell me a story", 4));
  ASSERT_TRUE(short_one.status.ok());
  EXPECT_EQ(short_one.ids, std::vector<int32_t>(story.begin(), story.begin() + 4));
  EXPECT_EQ(short_one.usage.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(short_one.usage.blend(), "default");
}

TEST(RouterServiceTest, StopStringEndsTheStreamAndCancelsTheSequence) {
  Router router({{.tokens = StoryIds(), .delay_per_token = std::chrono::milliseconds(20)}});
  v1::GenerateRequest request = Request("Tell me a story", 1000);
  request.add_stop("café");
  const Streamed streamed = router.Call(request);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.text, "Once upon a time, there was a ");
  EXPECT_EQ(streamed.usage.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(streamed.usage.completion_tokens(), streamed.ids.size());
  EXPECT_LT(streamed.ids.size(), StoryIds().size());
  EXPECT_TRUE(Eventually([&] { return router.replica(0).cancelled() == 1; }))
      << "the attention sequence should be cancelled once the stop string appeared";
}

TEST(RouterServiceTest, BadRequestsAreInvalidArgumentAndNeverReachAttention) {
  Router router({{.tokens = StoryIds(), .vocab_size = 1536}});
  std::vector<v1::GenerateRequest> bad;
  bad.push_back(Request("", 4));
  bad.push_back(Request("hi", 0));
  bad.push_back(Request("hi", 5000));
  bad.push_back(Request("hi", 4));
  bad.back().mutable_sampling()->set_temperature(-1.0f);
  bad.push_back(Request("hi", 4));
  bad.back().mutable_sampling()->set_top_p(1.5f);
  bad.push_back(Request("hi", 4));
  bad.back().mutable_token_ids()->add_ids(1536);
  for (const auto& request : bad) {
    const Streamed streamed = router.Call(request);
    EXPECT_EQ(streamed.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << request.ShortDebugString() << " -> " << streamed.status.error_message();
    EXPECT_EQ(streamed.deltas, 0);
  }
  EXPECT_EQ(router.replica(0).calls(), 0);
}

TEST(RouterServiceTest, FullQueueIsResourceExhausted) {
  Router router({{.tokens = StoryIds(), .delay_per_token = std::chrono::milliseconds(20)}},
                {.max_running = 1, .max_waiting = 0});
  auto running = std::async(std::launch::async, [&] { return router.Call(Request("a", 1000)); });
  ASSERT_TRUE(Eventually([&] { return router.replica(0).running() == 1; }));
  const Streamed refused = router.Call(Request("b", 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.status.error_message();
  EXPECT_TRUE(running.get().status.ok());
  EXPECT_EQ(router.replica(0).calls(), 1);
  EXPECT_TRUE(router.Call(Request("c", 2)).status.ok()) << "a slot is free again";
}

TEST(RouterServiceTest, DeadlineWhileWaitingIsDeadlineExceeded) {
  Router router({{.tokens = StoryIds(), .delay_per_token = std::chrono::milliseconds(20)}},
                {.max_running = 1, .max_waiting = 4});
  auto running = std::async(std::launch::async, [&] { return router.Call(Request("a", 1000)); });
  ASSERT_TRUE(Eventually([&] { return router.replica(0).running() == 1; }));
  const Streamed late = router.Call(Request("b", 4), std::chrono::milliseconds(150));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << late.status.error_message();
  EXPECT_TRUE(Eventually([&] { return router.service().admission().waiting() == 0; }))
      << "the expired waiter left the queue";
  EXPECT_TRUE(running.get().status.ok());
  EXPECT_EQ(router.replica(0).calls(), 1);
}

TEST(RouterServiceTest, UnavailableReplicaIsRetriedOnAnother) {
  Router router({{.tokens = StoryIds(), .fail_with = grpc::StatusCode::UNAVAILABLE}, {.tokens = StoryIds()}});
  for (int i = 0; i < 4; ++i) {
    const Streamed streamed = router.Call(Request("hi", 3));
    ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
    EXPECT_EQ(streamed.ids.size(), 3u);
  }
  EXPECT_GE(router.replica(0).calls(), 1) << "the failing replica was tried";
  EXPECT_EQ(router.replica(1).calls(), 4);
}

TEST(RouterServiceTest, EveryReplicaUnavailableIsUnavailable) {
  Router router({{.fail_with = grpc::StatusCode::UNAVAILABLE}, {.fail_with = grpc::StatusCode::UNAVAILABLE}});
  const Streamed streamed = router.Call(Request("hi", 3));
  EXPECT_EQ(streamed.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(streamed.status.error_message().find("scripted failure"), std::string::npos)
      << streamed.status.error_message();
  EXPECT_EQ(router.replica(0).calls() + router.replica(1).calls(), 2) << "each replica tried once";
}

TEST(RouterServiceTest, OtherErrorsPassThroughWithoutRetry) {
  Router router({{.fail_with = grpc::StatusCode::NOT_FOUND}, {.fail_with = grpc::StatusCode::NOT_FOUND}});
  v1::GenerateRequest request = Request("hi", 3);
  request.set_blend("no-such-blend");
  const Streamed streamed = router.Call(request);
  EXPECT_EQ(streamed.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(router.replica(0).calls() + router.replica(1).calls(), 1);
}

TEST(RouterServiceTest, FailureAfterTokensEndsWithAbortedUsageAndTheError) {
  Router router({{.tokens = StoryIds(), .fail_after_tokens = 3}, {.tokens = StoryIds(), .fail_after_tokens = 3}});
  const Streamed streamed = router.Call(Request("hi", 10));
  EXPECT_EQ(streamed.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(streamed.ids.size(), 3u);
  ASSERT_TRUE(streamed.have_usage);
  EXPECT_EQ(streamed.usage.finish_reason(), v1::FINISH_REASON_ABORTED);
  EXPECT_EQ(streamed.usage.completion_tokens(), 3u);
  EXPECT_EQ(router.replica(0).calls() + router.replica(1).calls(), 1) << "tokens were sent: no retry";
}

TEST(RouterServiceTest, ClientCancellationReachesTheAttentionReplica) {
  Router router({{.tokens = StoryIds(), .delay_per_token = std::chrono::milliseconds(30)}});
  const Streamed streamed =
      router.Call(Request("hi", 1000), std::chrono::seconds(20), [](grpc::ClientContext& context) { context.TryCancel(); });
  EXPECT_EQ(streamed.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return router.replica(0).cancelled() == 1 && router.replica(0).running() == 0; }));
  EXPECT_TRUE(Eventually([&] { return router.service().admission().running() == 0; }));
}

TEST(RouterServiceTest, NoReachableReplicaAndShutdownAreUnavailable) {
  Router router({{.tokens = StoryIds()}});
  router.service().StopAdmitting();
  const Streamed refused = router.Call(Request("hi", 3));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(refused.status.error_message().find("shutting down"), std::string::npos);

  PassThroughBlendSelector blends;
  auto pool = AttentionPool::Create({"127.0.0.1:1"});
  RouterServiceImpl lonely(BundledTokenizer(), *pool, blends, {});
  auto runner = rpc::ServerRunner::Start({.listen_address = "127.0.0.1:0"}, {&lonely}, "router");
  ASSERT_TRUE(runner.ok());
  auto stub = v1::RouterService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string((*runner)->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, Request("hi", 3));
  v1::GenerateResponse response;
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace expertmesh::router_service
