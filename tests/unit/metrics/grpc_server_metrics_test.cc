// The gRPC server metrics interceptor on a real server on loopback: started/handled counts by
// status code, messages each way, handling time, in-flight calls, cancellation, the standard
// health service and unknown methods (bounded to one "unknown" series).
#include "engine/metrics/grpc_server_metrics.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <thread>

#include "expertmesh/v1/router_service.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_test_util.h"

namespace expertmesh::metrics {
namespace {

using testing::ParseExposition;
using testing::SeriesKey;

// max_tokens 0: INVALID_ARGUMENT; 999: streams until the client cancels; else that many deltas
// and a usage event.
class FakeRouter final : public expertmesh::v1::RouterService::Service {
 public:
  grpc::Status Generate(grpc::ServerContext* context, const expertmesh::v1::GenerateRequest* request,
                        grpc::ServerWriter<expertmesh::v1::GenerateResponse>* writer) override {
    if (request->max_tokens() == 0) return {grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be >= 1"};
    expertmesh::v1::GenerateResponse delta;
    delta.mutable_delta()->add_token_ids(5);
    if (request->max_tokens() == 999) {
      while (!context->IsCancelled()) {
        writer->Write(delta);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return {grpc::StatusCode::CANCELLED, "cancelled"};
    }
    for (uint32_t i = 0; i < request->max_tokens(); ++i) writer->Write(delta);
    expertmesh::v1::GenerateResponse usage;
    usage.mutable_usage()->set_completion_tokens(request->max_tokens());
    writer->Write(usage);
    return grpc::Status::OK;
  }
};

class GrpcServerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto created = GrpcServerMetrics::Create(registry_, {"expertmesh.v1.RouterService"});
    ASSERT_TRUE(created.ok()) << created.status();
    metrics_ = *std::move(created);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&router_);
    metrics_->InstallOn(builder);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  grpc::Status Generate(uint32_t max_tokens, int* messages) {
    auto stub = expertmesh::v1::RouterService::NewStub(channel_);
    grpc::ClientContext context;
    expertmesh::v1::GenerateRequest request;
    request.set_text("hi");
    request.set_max_tokens(max_tokens);
    auto reader = stub->Generate(&context, request);
    expertmesh::v1::GenerateResponse response;
    *messages = 0;
    while (reader->Read(&response)) {
      ++*messages;
      if (max_tokens == 999 && *messages == 3) context.TryCancel();
    }
    return reader->Finish();
  }

  testing::Exposition Scrape() {
    prometheus::TextSerializer serializer;
    auto parsed = ParseExposition(serializer.Serialize(registry_.Collect()));
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    return parsed.ok() ? *parsed : testing::Exposition{};
  }

  // Waits until the server has torn down every call (interceptors are destroyed after the
  // status is sent, asynchronously to the client seeing it).
  void WaitForIdle(const std::map<std::string, std::string>& labels) {
    for (int i = 0; i < 200; ++i) {
      if (Scrape().Value(SeriesKey("grpc_server_in_flight_requests", labels)) == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  prometheus::Registry registry_;
  std::unique_ptr<GrpcServerMetrics> metrics_;
  FakeRouter router_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

const std::map<std::string, std::string> kGenerate = {
    {"grpc_type", "server_stream"}, {"grpc_service", "expertmesh.v1.RouterService"}, {"grpc_method", "Generate"}};

std::map<std::string, std::string> With(std::map<std::string, std::string> labels, const std::string& name,
                                        const std::string& value) {
  labels[name] = value;
  return labels;
}

TEST_F(GrpcServerMetricsTest, CountsCallsMessagesAndCodes) {
  int messages = 0;
  ASSERT_TRUE(Generate(4, &messages).ok());
  EXPECT_EQ(messages, 5);
  EXPECT_EQ(Generate(0, &messages).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Generate(999, &messages).error_code(), grpc::StatusCode::CANCELLED);
  WaitForIdle(kGenerate);

  testing::Exposition scraped = Scrape();
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_started_total", kGenerate)), 3);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_handled_total", With(kGenerate, "grpc_code", "OK"))), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_handled_total", With(kGenerate, "grpc_code", "InvalidArgument"))), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_handled_total", With(kGenerate, "grpc_code", "Canceled"))), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_msg_received_total", kGenerate)), 3);
  // 5 for the first call, none for the rejected one, >= 3 for the cancelled one.
  EXPECT_GE(scraped.Value(SeriesKey("grpc_server_msg_sent_total", kGenerate)).value_or(0), 8);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_handling_seconds_count", kGenerate)), 3);
  EXPECT_GT(scraped.Value(SeriesKey("grpc_server_handling_seconds_sum", kGenerate)).value_or(0), 0);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_in_flight_requests", kGenerate)), 0);
  EXPECT_EQ(scraped.types["grpc_server_handling_seconds"], "histogram");
}

TEST_F(GrpcServerMetricsTest, InFlightCountsRunningStreams) {
  auto stub = expertmesh::v1::RouterService::NewStub(channel_);
  grpc::ClientContext context;
  expertmesh::v1::GenerateRequest request;
  request.set_max_tokens(999);
  auto reader = stub->Generate(&context, request);
  expertmesh::v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(Scrape().Value(SeriesKey("grpc_server_in_flight_requests", kGenerate)), 1);
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  reader->Finish();
  WaitForIdle(kGenerate);
  EXPECT_EQ(Scrape().Value(SeriesKey("grpc_server_in_flight_requests", kGenerate)), 0);
}

TEST_F(GrpcServerMetricsTest, HealthChecksAreLabelledAsUnaryHealthCalls) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(&context, request, &response).ok());
  std::map<std::string, std::string> check = {
      {"grpc_type", "unary"}, {"grpc_service", "grpc.health.v1.Health"}, {"grpc_method", "Check"}};
  WaitForIdle(check);
  testing::Exposition scraped = Scrape();
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_handled_total", With(check, "grpc_code", "OK"))), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_msg_received_total", check)), 1);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_msg_sent_total", check)), 1);
}

TEST_F(GrpcServerMetricsTest, UnknownMethodsShareOneBoundedSeries) {
  grpc::GenericStub generic(channel_);
  for (const char* method : {"/made.up.Service/A", "/made.up.Service/B", "/other/C"}) {
    grpc::ClientContext context;
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1);
    grpc::ByteBuffer response;
    std::mutex mutex;
    std::condition_variable done_signal;
    bool done = false;
    grpc::Status status;
    generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, [&](grpc::Status result) {
      std::lock_guard<std::mutex> lock(mutex);
      status = result;
      done = true;
      done_signal.notify_one();
    });
    std::unique_lock<std::mutex> lock(mutex);
    done_signal.wait(lock, [&] { return done; });
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << method;
  }
  testing::Exposition scraped = Scrape();
  for (const auto& [key, value] : scraped.samples) {
    EXPECT_EQ(key.find("made.up"), std::string::npos) << key;
    EXPECT_EQ(key.find("\"other\""), std::string::npos) << key;
  }
  // gRPC (1.51) runs server interceptors for unregistered methods too: all land in one series.
  std::map<std::string, std::string> unknown = {
      {"grpc_type", "unknown"}, {"grpc_service", "unknown"}, {"grpc_method", "unknown"}};
  WaitForIdle(unknown);
  scraped = Scrape();
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_started_total", unknown)), 3);
  EXPECT_EQ(scraped.Value(SeriesKey("grpc_server_handled_total", With(unknown, "grpc_code", "Unimplemented"))), 3);
}

TEST(GrpcServerMetricsCreateTest, UnknownServiceNameIsNotFound) {
  prometheus::Registry registry;
  auto created = GrpcServerMetrics::Create(registry, {"expertmesh.v1.NoSuchService"});
  EXPECT_EQ(created.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(created.status().message().find("NoSuchService"), std::string::npos);
}

TEST(GrpcCodeLabelTest, SpellsCodesLikeGrpcGo) {
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::CANCELLED), "Canceled");
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::RESOURCE_EXHAUSTED), "ResourceExhausted");
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::UNAUTHENTICATED), "Unauthenticated");
  EXPECT_EQ(GrpcCodeLabel(static_cast<grpc::StatusCode>(99)), "Unknown");
}

}  // namespace
}  // namespace expertmesh::metrics
