// FakeRouter: deterministic streaming behaviour for load-tester tests.
#include "tests/unit/loadtest/fake_router.h"

#include <thread>

namespace expertmesh::loadtest::testing {
namespace v1 = expertmesh::v1;

grpc::Status FakeRouter::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                  grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const auto start = std::chrono::steady_clock::now();
  int now_running = ++concurrent_;
  int seen = max_concurrent_.load();
  while (now_running > seen && !max_concurrent_.compare_exchange_weak(seen, now_running)) {
  }
  struct Leave {
    std::atomic<int>& counter;
    ~Leave() { --counter; }
  } leave{concurrent_};
  const int64_t number = ++requests_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    blends_requested_[request->blend()]++;
    if (!request->ab_key().empty()) ab_keys_.insert(request->ab_key());
  }
  static const std::map<std::string, uint64_t> kVersions = {{"base", 7}, {"prose", 3}, {"code", 1}};
  std::string blend = request->blend();
  if (blend.empty()) {
    blend = request->ab_key().empty() ? "base" : (std::hash<std::string>()(request->ab_key()) % 2 ? "prose" : "code");
  }
  if (kVersions.count(blend) == 0) return {grpc::StatusCode::NOT_FOUND, "unknown blend '" + blend + "'"};
  if (options_.fail_every > 0 && number % options_.fail_every == 0) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED, "admission queue full"};
  }
  if (request->max_tokens() == 0) return {grpc::StatusCode::INVALID_ARGUMENT, "max_tokens must be >= 1"};
  std::this_thread::sleep_for(options_.time_to_first_token);
  double ttft = 0;
  for (uint32_t i = 0; i < request->max_tokens(); ++i) {
    if (context->IsCancelled()) return {grpc::StatusCode::CANCELLED, "cancelled"};
    if (i > 0) std::this_thread::sleep_for(options_.per_token);
    v1::GenerateResponse delta;
    delta.mutable_delta()->add_token_ids(100 + static_cast<int>(i));
    delta.mutable_delta()->set_text("x");
    if (i == 0) ttft = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!writer->Write(delta)) return {grpc::StatusCode::CANCELLED, "client gone"};
  }
  v1::GenerateResponse usage;
  usage.mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(request->token_ids().ids_size()));
  usage.mutable_usage()->set_completion_tokens(request->max_tokens());
  usage.mutable_usage()->set_time_to_first_token_seconds(ttft);
  usage.mutable_usage()->set_blend(blend);
  usage.mutable_usage()->set_blend_version(kVersions.at(blend));
  usage.mutable_usage()->set_finish_reason(v1::FINISH_REASON_LENGTH);
  writer->Write(usage);
  return grpc::Status::OK;
}

std::map<std::string, int> FakeRouter::blends_requested() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return blends_requested_;
}

std::set<std::string> FakeRouter::ab_keys() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ab_keys_;
}

FakeRouterServer::FakeRouterServer(FakeRouterOptions options) : router_(options) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(&router_);
  server_ = builder.BuildAndStart();
}

FakeRouterServer::~FakeRouterServer() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

}  // namespace expertmesh::loadtest::testing
