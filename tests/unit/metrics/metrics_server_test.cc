// MetricsServer and ServiceMetrics: scraped over real HTTP on loopback; listen-address forms, ports
// in use, and clients that misbehave (silent, oversized, wrong method) get clear answers.
#include "engine/metrics/metrics_server.h"

#include <grpcpp/grpcpp.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "engine/metrics/serving_metrics.h"
#include "engine/metrics/service_metrics.h"
#include "expertmesh/v1/router_service.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_test_util.h"

namespace expertmesh::metrics {
namespace {

using testing::HttpGet;
using testing::RawExchange;
using testing::ParseExposition;
using testing::SeriesKey;

// A listening socket on 127.0.0.1 (port chosen by the kernel), closed at scope end.
class HeldPort {
 public:
  HeldPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address);
    listen(fd_, 1);
    socklen_t length = sizeof address;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
  }
  ~HeldPort() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(ListenAddressTest, ParsesGrpcStyleAddresses) {
  struct Case {
    const char* text;
    std::string host;
    int port;
  };
  for (const Case& c : {Case{"127.0.0.1:9464", "127.0.0.1", 9464}, Case{":9464", "", 9464}, Case{"[::]:9464", "", 9464},
                        Case{"*:9464", "", 9464}, Case{"9464", "", 9464}, Case{"0.0.0.0:0", "0.0.0.0", 0},
                        Case{"localhost:9464", "127.0.0.1", 9464}, Case{"[::1]:80", "::1", 80},
                        Case{"metrics.svc:9464", "metrics.svc", 9464}}) {
    absl::StatusOr<ListenAddress> parsed = ParseListenAddress(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.status();
    EXPECT_EQ(parsed->host, c.host) << c.text;
    EXPECT_EQ(parsed->port, c.port) << c.text;
  }
  EXPECT_EQ(ParseListenAddress(":1")->ClientHost(), "127.0.0.1");
  EXPECT_EQ(ParseListenAddress("0.0.0.0:1")->ClientHost(), "127.0.0.1");
  EXPECT_EQ(ParseListenAddress("[::1]:1")->ClientHost(), "[::1]");
}

TEST(ListenAddressTest, RejectsMalformedAddresses) {
  for (const char* bad : {"", "host", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:-1", "127.0.0.1:x", "::1:80",
                          "[::1]", "[::1]80", "[]:80", "[not-v6]:80"}) {
    absl::StatusOr<ListenAddress> result = ParseListenAddress(bad);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(MetricsServerTest, UnresolvableHostIsUnavailableNamingTheHost) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start("no-such-host.invalid:0", {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(server.status().message().find("no-such-host.invalid"), std::string::npos) << server.status();
}

TEST(MetricsServerTest, ServesRegistryAndProcessMetricsOverHttp) {
  ServiceMetrics metrics("router");
  ServingMetrics serving(metrics.registry());
  serving.RecordFinished({.blend = "prose",
                          .finish = RequestFinish::kStop,
                          .prompt_tokens = 7,
                          .generated_tokens = 5,
                          .time_to_first_token_seconds = 0.2,
                          .duration_seconds = 1.0});
  ASSERT_TRUE(metrics.Serve("127.0.0.1:0").ok());
  ASSERT_NE(metrics.server(), nullptr);
  int port = metrics.server()->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ(metrics.server()->url(), "http://127.0.0.1:" + std::to_string(port) + "/metrics");

  absl::StatusOr<testing::HttpResponse> response = HttpGet(port, "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_NE(response->headers.find("text/plain"), std::string::npos) << response->headers;
  absl::StatusOr<testing::Exposition> parsed = ParseExposition(response->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Value(SeriesKey("expertmesh_requests_total", {{"blend", "prose"}, {"finish_reason", "stop"}})), 1);
  EXPECT_EQ(parsed->Value(SeriesKey("expertmesh_generation_tokens_total", {{"blend", "prose"}})), 5);
  EXPECT_EQ(parsed->Value(SeriesKey("expertmesh_prompt_tokens_total", {{"blend", "prose"}})), 7);
  // TPOT = (1.0 - 0.2) / 4 = 0.2: lands in the le="0.2" bucket, not in le="0.15".
  EXPECT_EQ(parsed->Value(SeriesKey("expertmesh_time_per_output_token_seconds_bucket", {{"blend", "prose"}, {"le", "0.2"}})), 1);
  EXPECT_EQ(parsed->Value(SeriesKey("expertmesh_time_per_output_token_seconds_bucket", {{"blend", "prose"}, {"le", "0.15"}})), 0);
  EXPECT_EQ(parsed->Value(SeriesKey("expertmesh_service_info", {{"service", "router"}, {"version", std::string(BuildVersion())}})), 1);
  EXPECT_EQ(parsed->types["process_resident_memory_bytes"], "gauge");
  EXPECT_GT(parsed->Value("process_resident_memory_bytes").value_or(0), 1 << 20);
  EXPECT_GT(parsed->Value("process_open_fds").value_or(0), 2);
  EXPECT_GT(parsed->Value("process_start_time_seconds").value_or(0), 1.6e9);
  EXPECT_EQ(parsed->types["process_cpu_seconds_total"], "counter");
  EXPECT_EQ(parsed->types["expertmesh_time_to_first_token_seconds"], "histogram");

  // Values move between scrapes.
  serving.RecordFinished({.blend = "prose", .finish = RequestFinish::kStop, .generated_tokens = 3});
  parsed = ParseExposition(HttpGet(port, "/metrics")->body);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->Value(SeriesKey("expertmesh_generation_tokens_total", {{"blend", "prose"}})), 8);
}

TEST(MetricsServerTest, Ipv6LoopbackServesWhereTheHostHasIpv6) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start("[::1]:0", {});
  if (!server.ok()) {  // a host without IPv6: refused with the reason, never a crash
    EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable) << server.status();
    GTEST_SKIP() << "no IPv6 loopback here: " << server.status();
  }
  EXPECT_EQ((*server)->url(), "http://[::1]:" + std::to_string((*server)->port()) + "/metrics");
  absl::StatusOr<std::string> answer = RawExchange((*server)->port(), "GET /metrics HTTP/1.1\r\n\r\n", AF_INET6);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_TRUE(answer->starts_with("HTTP/1.1 200 OK\r\n")) << *answer;
}

TEST(MetricsServerTest, PortInUseIsAClearUnavailableError) {
  HeldPort held;
  std::string address = "127.0.0.1:" + std::to_string(held.port());
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(address, {});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(server.status().message().find("Address already in use"), std::string::npos) << server.status();
  EXPECT_NE(server.status().message().find(address), std::string::npos) << server.status();
}

TEST(MetricsServerTest, SharingThePortOfThisProcesssGrpcServerFailsClearly) {
  // The "null context when constructing CivetServer" seen in a service binary: --metrics-listen
  // named the port its own gRPC server listens on.
  expertmesh::v1::RouterService::Service unimplemented_router;  // a server needs a service
  grpc::ServerBuilder builder;
  builder.RegisterService(&unimplemented_router);
  int grpc_port = 0;
  builder.AddListeningPort("0.0.0.0:0", grpc::InsecureServerCredentials(), &grpc_port);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  ASSERT_GT(grpc_port, 0);
  for (const std::string& address : {":" + std::to_string(grpc_port), "[::]:" + std::to_string(grpc_port),
                                     "127.0.0.1:" + std::to_string(grpc_port)}) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(address, {});
    ASSERT_FALSE(server.ok()) << address;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable) << address;
    EXPECT_NE(server.status().message().find("in use"), std::string::npos) << server.status();
    EXPECT_NE(server.status().message().find("gRPC port"), std::string::npos) << server.status();
  }
  grpc_server->Shutdown();
}

TEST(MetricsServerTest, GrpcStyleWildcardAddressesServe) {
  std::vector<std::unique_ptr<MetricsServer>> servers;
  for (const char* address : {":0", "[::]:0", "0.0.0.0:0"}) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> server =
        MetricsServer::Start(address, {std::make_shared<prometheus::Registry>()});
    ASSERT_TRUE(server.ok()) << address << ": " << server.status();
    absl::StatusOr<testing::HttpResponse> response = HttpGet((*server)->port(), "/metrics");
    ASSERT_TRUE(response.ok()) << address;
    EXPECT_EQ(response->status, 200);
    servers.push_back(*std::move(server));
  }
  // Stopping is immediate, also after serving.
  auto before = std::chrono::steady_clock::now();
  servers.clear();
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(1));
}

TEST(MetricsServerTest, ServiceMetricsServeTwiceIsRefused) {
  ServiceMetrics metrics("expert");
  ASSERT_TRUE(metrics.Serve("127.0.0.1:0").ok());
  EXPECT_EQ(metrics.Serve("127.0.0.1:0").code(), absl::StatusCode::kFailedPrecondition);
  ServiceMetrics quiet("expert");
  EXPECT_TRUE(quiet.Serve("").ok());
  EXPECT_EQ(quiet.server(), nullptr);
}

}  // namespace
}  // namespace expertmesh::metrics
