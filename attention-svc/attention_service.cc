// Generate / Describe of the attention tier.
#include "attention-svc/attention_service.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/rpc/grpc_status.h"

namespace expertmesh::attention_service {
namespace {

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kAborted: return v1::FINISH_REASON_ABORTED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// The call's deadline on the steady clock (max when the client set none).
Clock::time_point SteadyDeadline(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return Clock::time_point::max();
  }
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - std::chrono::system_clock::now());
}

}  // namespace

AttentionServiceImpl::AttentionServiceImpl(const ModelConfig& config, BatchScheduler* scheduler,
                                           const ExpertFanout* fanout, AttentionServiceOptions options)
    : config_(config), scheduler_(scheduler), fanout_(fanout), options_(std::move(options)) {
  if (options_.max_prompt_tokens <= 0) options_.max_prompt_tokens = config_.max_position_embeddings;
}

absl::Status AttentionServiceImpl::Validate(const v1::SequenceRequest& request, SequenceParams* params) const {
  const int64_t prompt_tokens = request.prompt_ids_size();
  if (prompt_tokens == 0) return absl::InvalidArgumentError("prompt_ids is empty");
  if (prompt_tokens > options_.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt has ", prompt_tokens, " tokens; the limit is ",
                                                   options_.max_prompt_tokens));
  }
  for (int i = 0; i < request.prompt_ids_size(); ++i) {
    const int32_t id = request.prompt_ids(i);
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt_ids[", i, "] = ", id, " is outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
  }
  if (request.max_tokens() == 0) return absl::InvalidArgumentError("max_tokens must be >= 1");
  if (prompt_tokens + static_cast<int64_t>(request.max_tokens()) > config_.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt_tokens, " tokens) + max_tokens (",
                                                   request.max_tokens(), ") exceeds the model's context of ",
                                                   config_.max_position_embeddings, " positions"));
  }
  SamplingParams sampling;
  sampling.temperature = request.sampling().temperature();
  sampling.top_p = request.sampling().top_p() == 0.0f ? 1.0f : request.sampling().top_p();
  sampling.seed = request.sampling().seed();
  if (absl::Status valid = ValidateSamplingParams(sampling); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: ", valid.message()));
  }
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    const int32_t id = request.stop_token_ids(i);
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids[", i, "] = ", id,
                                                     " is outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  }
  if (request.blend_version() != 0 && request.blend().empty()) {
    return absl::InvalidArgumentError("blend_version is set without a blend");
  }
  if (fanout_ != nullptr) {
    // Pin the weight set for the sequence's whole life: the caller's version, or the one the
    // shards serve now.
    WeightSetRef pinned{request.blend(), request.blend_version()};
    if (pinned.version == 0) {
      EXPERTMESH_ASSIGN_OR_RETURN(pinned, fanout_->ResolveWeightSet(request.blend()));
    }
    params->blend = pinned.name;
    params->blend_version = pinned.version;
    params->experts = fanout_->Pinned(pinned.name, pinned.version);
  }
  params->prompt_ids.assign(request.prompt_ids().begin(), request.prompt_ids().end());
  params->max_tokens = request.max_tokens();
  params->sampling = sampling;
  params->stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  params->stop_token_ids.insert(params->stop_token_ids.end(), options_.eos_token_ids.begin(),
                                options_.eos_token_ids.end());
  params->include_logits = request.include_logits();
  return absl::OkStatus();
}

grpc::Status AttentionServiceImpl::Generate(grpc::ServerContext* context, const v1::SequenceRequest* request,
                                            grpc::ServerWriter<v1::SequenceEvent>* writer) {
  const auto arrival = Clock::now();
  SequenceParams params;
  if (absl::Status valid = Validate(*request, &params); !valid.ok()) return rpc::ToGrpcStatus(valid);
  params.deadline = SteadyDeadline(*context);
  const std::string pinned_blend = params.blend;
  const uint64_t pinned_version = params.blend_version;
  absl::StatusOr<std::shared_ptr<SequenceHandle>> handle = scheduler_->Submit(std::move(params));
  if (!handle.ok()) return rpc::ToGrpcStatus(handle.status());

  v1::Usage usage;
  usage.set_prompt_tokens(request->prompt_ids_size());
  usage.set_blend(pinned_blend);
  usage.set_blend_version(pinned_version);
  bool stream_open = true;
  if (fanout_ != nullptr) {
    // First: which weight set serves every token (a caller that stops reading early keeps it).
    v1::SequenceEvent event;
    event.mutable_pinned()->set_blend(pinned_blend);
    event.mutable_pinned()->set_blend_version(pinned_version);
    if (!writer->Write(event)) {
      stream_open = false;
      (*handle)->Cancel();
    }
  }
  while (true) {
    SequenceUpdate update;
    if (!(*handle)->WaitNext(&update, Clock::now() + std::chrono::milliseconds(20))) {
      // Nothing new: notice a client that went away (cancellation or its deadline).
      if (context->IsCancelled()) (*handle)->Cancel();
      continue;
    }
    if (!update.finished) {
      if (usage.completion_tokens() == 0) {
        usage.set_time_to_first_token_seconds(std::chrono::duration<double>(Clock::now() - arrival).count());
      }
      usage.set_completion_tokens(usage.completion_tokens() + 1);
      if (!stream_open) continue;
      v1::SequenceEvent event;
      event.mutable_token()->set_token_id(update.token_id);
      if (!update.logits.empty()) {
        event.mutable_token()->set_logits(update.logits.data(), update.logits.size() * sizeof(float));
      }
      if (!writer->Write(event)) {
        stream_open = false;
        (*handle)->Cancel();
      }
      continue;
    }
    usage.set_finish_reason(ToProto(update.finish_reason));
    if (stream_open && (update.status.ok() || usage.completion_tokens() > 0)) {
      v1::SequenceEvent event;
      *event.mutable_usage() = usage;
      writer->Write(event);
    }
    if (!update.status.ok()) {
      if (context->IsCancelled() && update.status.code() == absl::StatusCode::kCancelled) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
      }
      return rpc::ToGrpcStatus(update.status);
    }
    return grpc::Status::OK;
  }
}

grpc::Status AttentionServiceImpl::Describe(grpc::ServerContext*, const v1::DescribeAttentionRequest*,
                                            v1::AttentionDescription* response) {
  response->set_model_type(config_.model_type);
  response->set_vocab_size(static_cast<uint32_t>(config_.vocab_size));
  response->set_hidden_size(static_cast<uint32_t>(config_.hidden_size));
  response->set_num_layers(static_cast<uint32_t>(config_.num_hidden_layers));
  response->set_max_position_embeddings(static_cast<uint32_t>(config_.max_position_embeddings));
  if (fanout_ != nullptr) {
    for (const std::string& address : fanout_->addresses()) response->add_expert_shards(address);
    response->set_healthy_expert_shards(static_cast<uint32_t>(fanout_->num_healthy_replicas()));
  }
  response->set_running_sequences(static_cast<uint32_t>(scheduler_->running_sequences()));
  response->set_waiting_sequences(static_cast<uint32_t>(scheduler_->waiting_sequences()));
  response->set_resident_weight_bytes(options_.resident_weight_bytes);
  response->set_backend(options_.backend);
  return grpc::Status::OK;
}

}  // namespace expertmesh::attention_service
