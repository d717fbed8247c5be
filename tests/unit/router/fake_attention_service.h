// FakeAttentionService: a scripted AttentionService for the router's unit tests, served by a real
// gRPC server on loopback (ServerRunner, with health). It streams a fixed list of token ids (up to
// max_tokens) with a per-token delay, can fail every call with a chosen code, and counts calls,
// cancellations and running sequences so tests can see what router-svc did to it.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "engine/rpc/server_runner.h"
#include "expertmesh/v1/attention_service.grpc.pb.h"

namespace expertmesh::router_service {

class FakeAttentionService final : public v1::AttentionService::Service {
 public:
  struct Script {
    std::vector<int32_t> tokens;  // streamed in order, at most max_tokens of them
    std::chrono::milliseconds delay_per_token{0};
    grpc::StatusCode fail_with = grpc::StatusCode::OK;  // non-OK: every call fails at once
    int fail_after_tokens = -1;  // >= 0: the stream breaks (UNAVAILABLE) after this many tokens
    uint32_t vocab_size = 1536;
    uint32_t max_position_embeddings = 2048;
    uint64_t blend_version = 7;
  };

  explicit FakeAttentionService(Script script) : script_(std::move(script)) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::SequenceRequest* request,
                        grpc::ServerWriter<v1::SequenceEvent>* writer) override;
  grpc::Status Describe(grpc::ServerContext* context, const v1::DescribeAttentionRequest* request,
                        v1::AttentionDescription* description) override;

  void set_fail_with(grpc::StatusCode code) { fail_with_.store(static_cast<int>(code)); }
  int calls() const { return calls_.load(); }
  int cancelled() const { return cancelled_.load(); }
  int running() const { return running_.load(); }
  v1::SequenceRequest last_request() const;

 private:
  const Script script_;
  std::atomic<int> fail_with_{0};
  std::atomic<int> calls_{0};
  std::atomic<int> cancelled_{0};
  std::atomic<int> running_{0};
  mutable std::mutex mutex_;
  v1::SequenceRequest last_request_;
};

// A fake replica and its server on 127.0.0.1:<free port>.
struct FakeReplica {
  static std::unique_ptr<FakeReplica> Start(FakeAttentionService::Script script);
  std::string address() const { return "127.0.0.1:" + std::to_string(runner->port()); }

  std::unique_ptr<FakeAttentionService> service;
  std::unique_ptr<rpc::ServerRunner> runner;
};

}  // namespace expertmesh::router_service
