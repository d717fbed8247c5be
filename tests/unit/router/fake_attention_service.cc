// Scripted attention replica for router unit tests.
#include "tests/unit/router/fake_attention_service.h"

#include <thread>

namespace expertmesh::router_service {

grpc::Status FakeAttentionService::Generate(grpc::ServerContext* context, const v1::SequenceRequest* request,
                                            grpc::ServerWriter<v1::SequenceEvent>* writer) {
  calls_.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    last_request_ = *request;
  }
  const auto fail_with = static_cast<grpc::StatusCode>(fail_with_.load());
  if (fail_with != grpc::StatusCode::OK) return grpc::Status(fail_with, "scripted failure");
  if (script_.fail_with != grpc::StatusCode::OK) return grpc::Status(script_.fail_with, "scripted failure");
  running_.fetch_add(1);
  struct Leave {
    std::atomic<int>& running;
    ~Leave() { running.fetch_sub(1); }
  } leave{running_};
  uint32_t sent = 0;
  for (int32_t token : script_.tokens) {
    if (sent == request->max_tokens()) break;
    if (script_.fail_after_tokens >= 0 && sent == static_cast<uint32_t>(script_.fail_after_tokens)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "scripted mid-stream failure");
    }
    if (script_.delay_per_token.count() > 0) {
      // Sleep in small steps so cancellation is seen promptly.
      const auto until = std::chrono::steady_clock::now() + script_.delay_per_token;
      while (std::chrono::steady_clock::now() < until && !context->IsCancelled()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    if (context->IsCancelled()) {
      cancelled_.fetch_add(1);
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    v1::SequenceEvent event;
    event.mutable_token()->set_token_id(token);
    if (!writer->Write(event)) {
      cancelled_.fetch_add(1);
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    ++sent;
  }
  v1::SequenceEvent last;
  last.mutable_usage()->set_prompt_tokens(request->prompt_ids_size());
  last.mutable_usage()->set_completion_tokens(sent);
  last.mutable_usage()->set_blend(request->blend().empty() ? "default" : request->blend());
  last.mutable_usage()->set_blend_version(script_.blend_version);
  last.mutable_usage()->set_finish_reason(sent == request->max_tokens() ? v1::FINISH_REASON_LENGTH
                                                                        : v1::FINISH_REASON_STOP);
  writer->Write(last);
  return grpc::Status::OK;
}

grpc::Status FakeAttentionService::Describe(grpc::ServerContext* context, const v1::DescribeAttentionRequest* request,
                                            v1::AttentionDescription* description) {
  description->set_model_type("deepseek_v3");
  description->set_vocab_size(script_.vocab_size);
  description->set_max_position_embeddings(script_.max_position_embeddings);
  description->set_running_sequences(running_.load());
  return grpc::Status::OK;
}

v1::SequenceRequest FakeAttentionService::last_request() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_request_;
}

std::unique_ptr<FakeReplica> FakeReplica::Start(FakeAttentionService::Script script) {
  auto replica = std::make_unique<FakeReplica>();
  replica->service = std::make_unique<FakeAttentionService>(std::move(script));
  rpc::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.drain_grace = std::chrono::milliseconds(100);
  auto runner = rpc::ServerRunner::Start(options, {replica->service.get()}, "expertmesh.v1.AttentionService");
  if (!runner.ok()) return nullptr;
  replica->runner = *std::move(runner);
  return replica;
}

}  // namespace expertmesh::router_service
