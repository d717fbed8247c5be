// FakeRouter: a small real RouterService on loopback for load-tester tests. It streams one
// token per delta after a configurable time to first token and per-token delay, reports usage
// with a blend and version (explicit blend, or one derived from the A/B key), fails every Nth
// request with RESOURCE_EXHAUSTED and unknown blends with NOT_FOUND, and records what it saw.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "expertmesh/v1/router_service.grpc.pb.h"

namespace expertmesh::loadtest::testing {

struct FakeRouterOptions {
  std::chrono::milliseconds time_to_first_token{5};
  std::chrono::milliseconds per_token{1};
  // Every Nth request (1-based) fails with RESOURCE_EXHAUSTED before any token; 0 = never.
  int fail_every = 0;
};

class FakeRouter final : public expertmesh::v1::RouterService::Service {
 public:
  explicit FakeRouter(FakeRouterOptions options) : options_(options) {}

  grpc::Status Generate(grpc::ServerContext* context, const expertmesh::v1::GenerateRequest* request,
                        grpc::ServerWriter<expertmesh::v1::GenerateResponse>* writer) override;

  int max_concurrent() const { return max_concurrent_.load(); }
  int64_t requests() const { return requests_.load(); }
  std::map<std::string, int> blends_requested() const;
  std::set<std::string> ab_keys() const;

 private:
  const FakeRouterOptions options_;
  std::atomic<int> concurrent_{0};
  std::atomic<int> max_concurrent_{0};
  std::atomic<int64_t> requests_{0};
  mutable std::mutex mutex_;
  std::map<std::string, int> blends_requested_;
  std::set<std::string> ab_keys_;
};

// The fake on 127.0.0.1:<free port>, stopped on destruction.
class FakeRouterServer {
 public:
  explicit FakeRouterServer(FakeRouterOptions options = {});
  ~FakeRouterServer();
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  FakeRouter& router() { return router_; }

 private:
  FakeRouter router_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace expertmesh::loadtest::testing
