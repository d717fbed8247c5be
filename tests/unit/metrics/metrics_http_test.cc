// The metrics endpoint's HTTP behaviour: request-head parsing and answers (pure), and a real
// MetricsServer on loopback facing clients that stay silent, send too much, use other methods,
// or exceed the connection limit; none of them may stop a well-behaved scrape.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include "engine/metrics/http_exposition.h"
#include "engine/metrics/metrics_server.h"
#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_test_util.h"

namespace expertmesh::metrics {
namespace {

using testing::ConnectLoopback;
using testing::HttpGet;
using testing::RawExchange;
using testing::ReadUntilClose;

std::string Exposition() { return "metric_a 1\n"; }

TEST(HttpExpositionTest, RequestHeadEndsAtTheBlankLine) {
  EXPECT_EQ(RequestHeadLength("GET /metrics HTTP/1.1\r\nHost: x\r\n"), 0u);
  EXPECT_EQ(RequestHeadLength("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), 34u);
  EXPECT_EQ(RequestHeadLength("GET /metrics HTTP/1.0\n\nextra"), 23u);
  EXPECT_EQ(RequestHeadLength(""), 0u);
}

TEST(HttpExpositionTest, AnswersByMethodAndPath) {
  int exposition_calls = 0;
  auto counted = [&] {
    ++exposition_calls;
    return Exposition();
  };
  std::string ok = RespondToRequestHead("GET /metrics?name[]=x HTTP/1.1\r\nHost: h\r\n\r\n", counted);
  EXPECT_TRUE(ok.starts_with("HTTP/1.1 200 OK\r\n")) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), std::string::npos);
  EXPECT_NE(ok.find("Content-Length: 11\r\n"), std::string::npos);
  EXPECT_TRUE(ok.ends_with("\r\n\r\nmetric_a 1\n")) << ok;

  std::string head = RespondToRequestHead("HEAD /metrics HTTP/1.1\r\n\r\n", counted);
  EXPECT_TRUE(head.starts_with("HTTP/1.1 200 OK\r\n"));
  EXPECT_NE(head.find("Content-Length: 11\r\n"), std::string::npos);
  EXPECT_TRUE(head.ends_with("\r\n\r\n")) << "HEAD carries no body: " << head;
  EXPECT_EQ(exposition_calls, 2);

  EXPECT_TRUE(RespondToRequestHead("GET / HTTP/1.1\r\n\r\n", counted).starts_with("HTTP/1.1 404 "));
  EXPECT_TRUE(RespondToRequestHead("GET /metricsx HTTP/1.1\r\n\r\n", counted).starts_with("HTTP/1.1 404 "));
  std::string post = RespondToRequestHead("POST /metrics HTTP/1.1\r\n\r\n", counted);
  EXPECT_TRUE(post.starts_with("HTTP/1.1 405 ")) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos);
  for (const char* bad : {"GET /metrics\r\n\r\n", "GET metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/2\r\n\r\n",
                          "\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n", "\x16\x03\x01 TLS hello\r\n\r\n"}) {
    EXPECT_TRUE(RespondToRequestHead(bad, counted).starts_with("HTTP/1.1 400 ")) << bad;
  }
  EXPECT_EQ(exposition_calls, 2) << "only GET/HEAD /metrics collect";
  EXPECT_TRUE(RequestHeadTooLargeResponse().starts_with("HTTP/1.1 431 "));
}

class LiveServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = std::make_shared<prometheus::Registry>();
    prometheus::BuildCounter().Name("test_scrapes_marker_total").Help("marker").Register(*registry_).Add({}).Increment();
    absl::StatusOr<std::unique_ptr<MetricsServer>> started = MetricsServer::Start("127.0.0.1:0", {registry_});
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = *std::move(started);
  }
  void ExpectScrapeWorks() {
    absl::StatusOr<testing::HttpResponse> response = HttpGet(server_->port(), "/metrics");
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, 200);
    EXPECT_NE(response->body.find("test_scrapes_marker_total 1"), std::string::npos) << response->body;
  }
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsServer> server_;
};

TEST_F(LiveServerTest, SilentClientsDoNotBlockScrapes) {
  std::vector<int> silent;
  for (int i = 0; i < 8; ++i) silent.push_back(ConnectLoopback(server_->port()));
  auto before = std::chrono::steady_clock::now();
  ExpectScrapeWorks();
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(2));
  for (int fd : silent) close(fd);
  EXPECT_EQ(server_->scrapes_served(), 1u);
}

TEST_F(LiveServerTest, RequestArrivingInPiecesIsAnswered) {
  int fd = ConnectLoopback(server_->port());
  ASSERT_GE(fd, 0);
  for (const char* piece : {"GET /met", "rics HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"}) {
    ASSERT_GT(send(fd, piece, std::string(piece).size(), MSG_NOSIGNAL), 0);
    usleep(20000);
  }
  absl::StatusOr<std::string> raw = ReadUntilClose(fd);
  close(fd);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_TRUE(raw->starts_with("HTTP/1.1 200 OK\r\n")) << *raw;
}

TEST_F(LiveServerTest, OversizedAndWrongRequestsGetErrorsAndTheServerGoesOn) {
  absl::StatusOr<std::string> huge = RawExchange(server_->port(), "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a'));
  ASSERT_TRUE(huge.ok()) << huge.status();
  EXPECT_TRUE(huge->starts_with("HTTP/1.1 431 ")) << huge->substr(0, 100);
  EXPECT_TRUE(RawExchange(server_->port(), "DELETE /metrics HTTP/1.1\r\n\r\n")->starts_with("HTTP/1.1 405 "));
  EXPECT_TRUE(RawExchange(server_->port(), "garbage\r\n\r\n")->starts_with("HTTP/1.1 400 "));
  EXPECT_TRUE(RawExchange(server_->port(), "GET /admin HTTP/1.1\r\n\r\n")->starts_with("HTTP/1.1 404 "));
  // A client that connects and hangs up without a word.
  close(ConnectLoopback(server_->port()));
  ExpectScrapeWorks();
  EXPECT_EQ(server_->scrapes_served(), 1u);
}

TEST_F(LiveServerTest, BeyondTheConnectionLimitClientsWaitTheirTurn) {
  std::vector<int> held;
  for (size_t i = 0; i < MetricsServer::kMaxConnections + 4; ++i) held.push_back(ConnectLoopback(server_->port()));
  // The extra connections sit in the listen backlog; they are served once the silent ones go.
  for (size_t i = 0; i < MetricsServer::kMaxConnections; ++i) close(held[i]);
  const std::string request = "GET /metrics HTTP/1.1\r\n\r\n";
  for (size_t i = MetricsServer::kMaxConnections; i < held.size(); ++i) {
    ASSERT_EQ(send(held[i], request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    absl::StatusOr<std::string> raw = ReadUntilClose(held[i]);
    close(held[i]);
    ASSERT_TRUE(raw.ok()) << raw.status();
    EXPECT_TRUE(raw->starts_with("HTTP/1.1 200 OK\r\n")) << raw->substr(0, 100);
  }
  ExpectScrapeWorks();
}

TEST_F(LiveServerTest, StopsAtOnceWithClientsConnected) {
  int idle = ConnectLoopback(server_->port());
  ExpectScrapeWorks();
  auto before = std::chrono::steady_clock::now();
  server_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::milliseconds(500));
  char byte;
  EXPECT_EQ(recv(idle, &byte, 1, 0), 0) << "the idle client sees the connection closed";
  close(idle);
}

}  // namespace
}  // namespace expertmesh::metrics
