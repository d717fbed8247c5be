// Generate: validation, admission, replica choice with retry, streaming and usage.
#include "router-svc/router_service.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/rpc/grpc_status.h"
#include "expertmesh/v1/attention_service.grpc.pb.h"
#include "router-svc/delta_builder.h"

namespace expertmesh::router_service {
namespace {

using SteadyClock = std::chrono::steady_clock;

// The client's deadline on the steady clock (far future when it set none).
SteadyClock::time_point SteadyDeadline(const grpc::ServerContext& context) {
  const auto remaining = context.deadline() - std::chrono::system_clock::now();
  const auto cap = std::chrono::hours(24 * 365);
  if (remaining > cap) return SteadyClock::now() + cap;
  return SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(remaining);
}

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

metrics::RequestFinish FinishForMetrics(const RunOutcome& outcome, const absl::Status& status) {
  switch (outcome.finish_reason) {
    case v1::FINISH_REASON_STOP: return metrics::RequestFinish::kStop;
    case v1::FINISH_REASON_LENGTH: return metrics::RequestFinish::kLength;
    case v1::FINISH_REASON_ABORTED: return metrics::RequestFinish::kAborted;
    default: return status.code() == absl::StatusCode::kCancelled ? metrics::RequestFinish::kAborted
                                                                   : metrics::RequestFinish::kError;
  }
}

}  // namespace

RouterServiceImpl::RouterServiceImpl(const Tokenizer& tokenizer, AttentionPool& pool, BlendSelector& blends,
                                     RouterOptions options)
    : tokenizer_(tokenizer),
      pool_(pool),
      blends_(blends),
      options_(options),
      admission_(options.max_running, options.max_waiting,
                 options.metrics ? std::function<void(int)>([metrics = options.metrics](int waiting) {
                   metrics->SetWaitingRequests(waiting);
                 })
                                 : nullptr) {}

grpc::Status RouterServiceImpl::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const auto arrival = SteadyClock::now();
  if (!admitting_.load()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "router-svc is shutting down");
  auto model = pool_.model_info();
  if (!model.ok()) return rpc::ToGrpcStatus(model.status());
  auto validated = ValidateRequest(*request, options_.limits, *model, tokenizer_);
  if (!validated.ok()) return rpc::ToGrpcStatus(validated.status());
  // The choice pins its weight-set version until the request ends.
  absl::StatusOr<BlendChoice> choice = blends_.Select(*request);
  if (!choice.ok()) return rpc::ToGrpcStatus(choice.status());
  const std::string& blend = choice->blend;

  AdmissionQueue::Ticket ticket;
  absl::Status admitted =
      admission_.Admit(SteadyDeadline(*context), [context] { return context->IsCancelled(); }, &ticket);
  if (!admitted.ok()) {
    if (options_.metrics) {
      metrics::FinishedRequest rejected;
      rejected.blend = blend;
      rejected.finish = metrics::RequestFinish::kRejected;
      options_.metrics->RecordFinished(rejected);
    }
    return rpc::ToGrpcStatus(admitted);
  }

  std::optional<metrics::ServingMetrics::RunningRequest> running;
  if (options_.metrics) running.emplace(options_.metrics->TrackRunning(blend));
  std::string log_line;
  RunOutcome outcome;
  const absl::Status status = Run(context, *validated, *choice, arrival, writer, &log_line, &outcome);
  if (options_.metrics) {
    metrics::FinishedRequest finished;
    // A name the expert tier does not know must not take one of the bounded blend labels.
    const bool unknown_blend = outcome.completion_tokens == 0 && (status.code() == absl::StatusCode::kNotFound ||
                                                                  status.code() == absl::StatusCode::kInvalidArgument);
    finished.blend = unknown_blend ? metrics::kOtherLabelValue : std::string_view(blend);
    finished.finish = FinishForMetrics(outcome, status);
    finished.prompt_tokens = static_cast<uint32_t>(validated->prompt_ids.size());
    finished.generated_tokens = outcome.completion_tokens;
    finished.time_to_first_token_seconds = outcome.time_to_first_token_seconds;
    finished.duration_seconds = SecondsSince(arrival);
    options_.metrics->RecordFinished(finished);
  }
  if (options_.log_requests) {
    std::fprintf(stderr, "generate %s %s\n", status.ok() ? "OK" : absl::StatusCodeToString(status.code()).c_str(),
                 log_line.c_str());
  }
  return rpc::ToGrpcStatus(status);
}

absl::Status RouterServiceImpl::Run(grpc::ServerContext* context, const ValidatedRequest& request,
                                    const BlendChoice& choice, SteadyClock::time_point arrival,
                                    grpc::ServerWriter<v1::GenerateResponse>* writer, std::string* log_line,
                                    RunOutcome* outcome) {
  v1::SequenceRequest sequence;
  sequence.mutable_prompt_ids()->Assign(request.prompt_ids.begin(), request.prompt_ids.end());
  sequence.set_max_tokens(request.max_tokens);
  *sequence.mutable_sampling() = request.sampling;
  sequence.set_blend(choice.blend);
  sequence.set_blend_version(choice.version);

  DeltaBuilder builder(tokenizer_, request.stop);
  std::set<int> failed_replicas;
  grpc::Status last_failure;
  double time_to_first_token = 0.0;
  uint32_t completion_tokens = 0;
  v1::Usage upstream_usage;
  bool have_upstream_usage = false;
  v1::SequencePinned pinned;  // the weight set attention-svc pinned (its first event)
  bool have_pinned = false;
  bool client_gone = false;
  grpc::Status upstream_status;
  std::string replica_address;

  for (;;) {
    auto lease = pool_.Acquire(failed_replicas);
    if (!lease.ok()) {
      if (failed_replicas.empty()) return lease.status();
      return absl::UnavailableError(absl::StrCat(lease.status().message(), "; last failure: ",
                                                 last_failure.error_message()));
    }
    replica_address = lease->address();
    // Child call: inherits the client's deadline, and is cancelled when the client cancels.
    std::unique_ptr<grpc::ClientContext> call = grpc::ClientContext::FromServerContext(*context);
    auto reader = lease->stub()->Generate(call.get(), sequence);
    v1::SequenceEvent event;
    while (reader->Read(&event)) {
      if (event.has_token()) {
        v1::GenerateResponse response;
        *response.mutable_delta() = builder.Add(event.token().token_id());
        if (completion_tokens++ == 0) time_to_first_token = SecondsSince(arrival);
        if (!writer->Write(response)) {
          client_gone = true;
          call->TryCancel();
          break;
        }
        if (builder.stopped()) {
          call->TryCancel();  // the rest of the generation is not wanted
          break;
        }
      } else if (event.has_usage()) {
        upstream_usage = event.usage();
        have_upstream_usage = true;
      } else if (event.has_pinned()) {
        pinned = event.pinned();
        have_pinned = true;
      }
    }
    upstream_status = reader->Finish();
    if (upstream_status.ok() || builder.stopped() || client_gone) break;
    const bool retryable = upstream_status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                           completion_tokens == 0 && !context->IsCancelled();
    if (!retryable) break;
    std::fprintf(stderr, "attention replica %s failed before the first token (%s); trying another\n",
                 replica_address.c_str(), upstream_status.error_message().c_str());
    pool_.ReportUnavailable(lease->index());
    if (options_.metrics) options_.metrics->RecordAttentionFailover();
    failed_replicas.insert(lease->index());
    last_failure = upstream_status;
  }

  outcome->completion_tokens = completion_tokens;
  if (completion_tokens > 0) outcome->time_to_first_token_seconds = time_to_first_token;
  *log_line = absl::StrCat("prompt_tokens=", request.prompt_ids.size(), " completion_tokens=", completion_tokens,
                           " ttft=", time_to_first_token, "s replica=", replica_address);
  if (client_gone || (context->IsCancelled() && !builder.stopped())) {
    return absl::CancelledError("the client cancelled the request");
  }
  v1::Usage usage;
  usage.set_prompt_tokens(static_cast<uint32_t>(request.prompt_ids.size()));
  usage.set_completion_tokens(completion_tokens);
  usage.set_time_to_first_token_seconds(time_to_first_token);
  // attention-svc names the pinned blend and version in its first event (and again in its usage),
  // so a sequence the router cancelled (stop string) reports them too.
  if (have_upstream_usage) {
    usage.set_blend(upstream_usage.blend());
    usage.set_blend_version(upstream_usage.blend_version());
  } else if (have_pinned) {
    usage.set_blend(pinned.blend());
    usage.set_blend_version(pinned.blend_version());
  } else {
    usage.set_blend(choice.blend);
    usage.set_blend_version(choice.version);
  }
  const absl::Status upstream = rpc::FromGrpcStatus(upstream_status);
  if (builder.stopped()) {
    usage.set_finish_reason(v1::FINISH_REASON_STOP);
  } else if (upstream.ok()) {
    v1::GenerateResponse last;
    *last.mutable_delta() = builder.Finish();
    if (!last.delta().text().empty() && !writer->Write(last)) {
      return absl::CancelledError("the client went away before the end");
    }
    v1::FinishReason reason = have_upstream_usage ? upstream_usage.finish_reason() : v1::FINISH_REASON_UNSPECIFIED;
    if (reason == v1::FINISH_REASON_UNSPECIFIED) {
      reason = completion_tokens >= request.max_tokens ? v1::FINISH_REASON_LENGTH : v1::FINISH_REASON_STOP;
    }
    usage.set_finish_reason(reason);
  } else if (completion_tokens == 0) {
    return upstream;  // nothing was streamed: the attention tier's error is the answer
  } else {
    usage.set_finish_reason(v1::FINISH_REASON_ABORTED);
  }
  outcome->finish_reason = usage.finish_reason();
  absl::StrAppend(log_line, " finish=", v1::FinishReason_Name(usage.finish_reason()), " blend='", usage.blend(), "'");
  v1::GenerateResponse final_event;
  *final_event.mutable_usage() = usage;
  writer->Write(final_event);
  if (!upstream.ok() && !builder.stopped()) {
    return absl::Status(upstream.code(), absl::StrCat("generation ended after ", completion_tokens,
                                                      " tokens: ", upstream.message()));
  }
  return absl::OkStatus();
}

}  // namespace expertmesh::router_service
