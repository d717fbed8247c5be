// expertmesh-metrics-demo: a small process that exports every ExpertMesh metric with live values,
// for the dashboard harness (tests/dashboard) and for trying the Grafana dashboard by hand. It
// serves /metrics on --metrics-listen, runs a real gRPC RouterService on loopback with the
// metrics interceptor and calls it (successes and INVALID_ARGUMENT errors), and records a round
// of synthetic serving / MoE / blend traffic (SampleTraffic) every --round-ms. It exits after
// --lifetime-seconds (bounded), or on SIGTERM/SIGINT.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/metrics/service_metrics.h"
#include "expertmesh/v1/router_service.grpc.pb.h"
#include "tests/unit/metrics/sample_traffic.h"

ABSL_FLAG(int, round_ms, 200, "period of one synthetic traffic round and one pair of gRPC calls");
ABSL_FLAG(int, lifetime_seconds, 600, "exit after this long");

namespace {

namespace v1 = expertmesh::v1;
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

// Streams max_tokens deltas; max_tokens 0 is INVALID_ARGUMENT.
class DemoRouter final : public v1::RouterService::Service {
  grpc::Status Generate(grpc::ServerContext*, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    if (request->max_tokens() == 0) return {grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be >= 1"};
    v1::GenerateResponse delta;
    delta.mutable_delta()->add_token_ids(7);
    for (uint32_t i = 0; i < request->max_tokens(); ++i) writer->Write(delta);
    return grpc::Status::OK;
  }
};

void Call(v1::RouterService::Stub& stub, uint32_t max_tokens) {
  grpc::ClientContext context;
  v1::GenerateRequest request;
  request.set_max_tokens(max_tokens);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  reader->Finish();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  expertmesh::metrics::ServiceMetrics metrics("router");
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  DemoRouter router;
  builder.RegisterService(&router);
  if (absl::Status installed = metrics.InstallGrpcMetrics(builder, {"expertmesh.v1.RouterService"}); !installed.ok()) {
    std::fprintf(stderr, "expertmesh-metrics-demo: %s\n", std::string(installed.message()).c_str());
    return 1;
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "expertmesh-metrics-demo: cannot start the gRPC server\n");
    return 1;
  }
  std::string listen = expertmesh::metrics::MetricsListenFlag();
  if (listen.empty()) listen = "127.0.0.1:0";
  if (absl::Status served = metrics.Serve(listen); !served.ok()) {
    std::fprintf(stderr, "expertmesh-metrics-demo: %s\n", std::string(served.message()).c_str());
    return 1;
  }
  // The harness reads this line to learn the port.
  std::printf("metrics at %s\n", metrics.server()->url().c_str());
  std::fflush(stdout);

  auto stub = v1::RouterService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  expertmesh::metrics::testing::SampleTraffic traffic(metrics);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_lifetime_seconds));
  for (int64_t round = 0; !g_stop.load() && std::chrono::steady_clock::now() < deadline; ++round) {
    traffic.RecordRound(round);
    Call(*stub, 3);
    if (round % 2 == 0) Call(*stub, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(absl::GetFlag(FLAGS_round_ms)));
  }
  server->Shutdown();
  return 0;
}
