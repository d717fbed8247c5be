// BatchScheduler: admission, the step loop, sampling and failure isolation.
#include "attention-svc/batch_scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace expertmesh::attention_service {

bool SequenceHandle::WaitNext(SequenceUpdate* update, Clock::time_point until) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!ready_.wait_until(lock, until, [&] { return !updates_.empty(); })) return false;
  *update = std::move(updates_.front());
  updates_.pop_front();
  return true;
}

void SequenceHandle::Push(SequenceUpdate update) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    updates_.push_back(std::move(update));
  }
  ready_.notify_all();
}

struct BatchScheduler::Sequence {
  Sequence(SequenceParams p, Sampler s)
      : params(std::move(p)), handle(std::make_shared<SequenceHandle>()), sampler(std::move(s)) {}
  SequenceParams params;
  std::shared_ptr<SequenceHandle> handle;
  std::unique_ptr<StepSequence> state;  // its KV cache in the model; made when it starts running
  Sampler sampler;
  bool prefilled = false;  // the prompt is in the cache
  int32_t last_token = -1;
  int64_t generated = 0;
  bool finished = false;
};

BatchScheduler::BatchScheduler(const DeepseekModel& model, SchedulerOptions options)
    : owned_model_(MakeCpuStepModel(model)), model_(*owned_model_), options_(options) {
  Start();
}

BatchScheduler::BatchScheduler(StepModel& model, SchedulerOptions options) : model_(model), options_(options) {
  Start();
}

void BatchScheduler::Start() {
  RecordCacheUsage();
  thread_ = std::thread([this] { Loop(); });
}

BatchScheduler::~BatchScheduler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  thread_.join();
  const absl::Status stopped = absl::UnavailableError("the attention server is shutting down");
  for (auto& sequence : running_) {
    if (!sequence->finished) Finish(*sequence, stopped, FinishReason::kAborted);
  }
  for (auto& sequence : waiting_) Finish(*sequence, stopped, FinishReason::kAborted);
}

absl::StatusOr<std::shared_ptr<SequenceHandle>> BatchScheduler::Submit(SequenceParams params) {
  absl::StatusOr<Sampler> sampler = Sampler::Create(params.sampling);
  if (!sampler.ok()) return sampler.status();
  auto sequence = std::make_unique<Sequence>(std::move(params), *std::move(sampler));
  std::shared_ptr<SequenceHandle> handle = sequence->handle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!admitting_ || stopping_) return absl::UnavailableError("the attention server is draining");
    if (static_cast<int64_t>(waiting_.size()) >= options_.max_waiting_sequences) {
      return absl::ResourceExhaustedError(absl::StrCat("too many waiting sequences (", waiting_.size(),
                                                       "); retry later or on another replica"));
    }
    waiting_.push_back(std::move(sequence));
  }
  work_.notify_all();
  return handle;
}

void BatchScheduler::StopAdmitting() {
  std::lock_guard<std::mutex> lock(mutex_);
  admitting_ = false;
}

int64_t BatchScheduler::running_sequences() const { return running_count_.load(); }

int64_t BatchScheduler::waiting_sequences() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(waiting_.size());
}

void BatchScheduler::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !running_.empty(); });
      if (stopping_) return;
    }
    Admit();
    const std::vector<Sequence*> batch = PrepareStep();
    if (!batch.empty()) {
      RunStep(batch);
      ++steps_;
    }
    RemoveFinished();
  }
}

void BatchScheduler::Admit() {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t prefill_tokens = 0;
  while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_running_sequences) {
    Sequence& next = *waiting_.front();
    const auto prompt = static_cast<int64_t>(next.params.prompt_ids.size());
    if (prefill_tokens > 0 && prefill_tokens + prompt > options_.max_prefill_tokens_per_step) break;
    if (!next.state) {
      absl::StatusOr<std::unique_ptr<StepSequence>> state = model_.NewSequence();
      if (!state.ok()) break;  // the model holds no more sequences now: retried after one finishes
      next.state = *std::move(state);
    }
    prefill_tokens += prompt;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  running_count_ = static_cast<int64_t>(running_.size());
}

std::vector<BatchScheduler::Sequence*> BatchScheduler::PrepareStep() {
  const auto now = Clock::now();
  std::vector<Sequence*> batch;
  for (auto& sequence : running_) {
    if (sequence->finished) continue;
    if (sequence->handle->cancelled()) {
      Finish(*sequence, absl::CancelledError("cancelled by the client"), FinishReason::kAborted);
    } else if (now >= sequence->params.deadline) {
      Finish(*sequence,
             absl::DeadlineExceededError(absl::StrCat("deadline passed after ", sequence->generated, " tokens")),
             FinishReason::kAborted);
    } else {
      batch.push_back(sequence.get());
    }
  }
  return batch;
}

absl::Status BatchScheduler::StepOnce(const std::vector<Sequence*>& batch) {
  if (options_.metrics) {
    const auto prefills = std::count_if(batch.begin(), batch.end(), [](const Sequence* s) { return !s->prefilled; });
    if (prefills > 0) options_.metrics->RecordStepBatch("prefill", prefills);
    if (static_cast<size_t>(prefills) < batch.size()) {
      options_.metrics->RecordStepBatch("decode", static_cast<int64_t>(batch.size()) - prefills);
    }
  }
  std::vector<StepModelInput> inputs;
  StepOptions step_options;
  step_options.micro_batches = options_.micro_batches;
  step_options.routed_experts = batch.empty() ? nullptr : batch.front()->params.experts.get();
  step_options.expert_deadline = Clock::now() + options_.step_timeout;
  for (Sequence* sequence : batch) {
    StepModelInput input;
    input.sequence = sequence->state.get();
    input.token_ids = sequence->prefilled ? std::span<const int32_t>(&sequence->last_token, 1)
                                          : std::span<const int32_t>(sequence->params.prompt_ids);
    inputs.push_back(input);
    step_options.expert_deadline = std::min(step_options.expert_deadline, sequence->params.deadline);
  }
  absl::StatusOr<std::vector<Tensor>> logits = model_.Step(inputs, step_options);
  if (!logits.ok()) return logits.status();

  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence& sequence = *batch[i];
    sequence.prefilled = true;
    std::span<const float> row = (*logits)[i].values();
    absl::StatusOr<int32_t> token = sequence.sampler.Sample(row);
    if (!token.ok()) {
      Finish(sequence, absl::InternalError(absl::StrCat("sampling failed: ", token.status().message())),
             FinishReason::kAborted);
      continue;
    }
    sequence.last_token = *token;
    ++sequence.generated;
    SequenceUpdate update;
    update.token_id = *token;
    if (sequence.params.include_logits) update.logits.assign(row.begin(), row.end());
    sequence.handle->Push(std::move(update));
    const auto& stops = sequence.params.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), *token) != stops.end()) {
      Finish(sequence, absl::OkStatus(), FinishReason::kStop);
    } else if (sequence.generated >= sequence.params.max_tokens) {
      Finish(sequence, absl::OkStatus(), FinishReason::kLength);
    }
  }
  return absl::OkStatus();
}

void BatchScheduler::RunStep(const std::vector<Sequence*>& batch) {
  // Groups in order of first appearance, so the step order is stable.
  std::vector<std::vector<Sequence*>> groups;
  for (Sequence* sequence : batch) {
    auto same = std::find_if(groups.begin(), groups.end(), [&](const std::vector<Sequence*>& group) {
      return group.front()->params.experts == sequence->params.experts;
    });
    if (same == groups.end()) {
      groups.push_back({sequence});
    } else {
      same->push_back(sequence);
    }
  }
  for (const std::vector<Sequence*>& group : groups) RunGroupStep(group);
}

void BatchScheduler::RunGroupStep(const std::vector<Sequence*>& batch) {
  const absl::Status status = StepOnce(batch);
  if (status.ok()) return;
  if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    // The step was bounded by the earliest deadline: end the expired sequences; the others
    // (their caches were rolled back) take the next step. If none expired, the server's own
    // step timeout ran out: that ends the whole step.
    const auto now = Clock::now();
    bool any_expired = false;
    for (Sequence* sequence : batch) {
      if (now >= sequence->params.deadline) {
        any_expired = true;
        Finish(*sequence, status, FinishReason::kAborted);
      }
    }
    if (!any_expired) {
      for (Sequence* sequence : batch) Finish(*sequence, status, FinishReason::kAborted);
    }
    return;
  }
  if (batch.size() == 1) {
    Finish(*batch.front(), status, FinishReason::kAborted);
    return;
  }
  // Isolate: each sequence alone; only those that fail on their own end.
  for (Sequence* sequence : batch) {
    const absl::Status alone = StepOnce({sequence});
    if (!alone.ok() && !sequence->finished) Finish(*sequence, alone, FinishReason::kAborted);
  }
}

void BatchScheduler::RecordCacheUsage() const {
  if (!options_.metrics) return;
  int64_t used = 0;
  for (const auto& sequence : running_) used += (sequence->state ? sequence->state->length() : 0);
  options_.metrics->SetKvCacheUsage(used, options_.max_running_sequences * model_.config().max_position_embeddings);
}

void BatchScheduler::Finish(Sequence& sequence, absl::Status status, FinishReason reason) {
  sequence.finished = true;
  SequenceUpdate update;
  update.finished = true;
  update.status = std::move(status);
  update.finish_reason = reason;
  sequence.handle->Push(std::move(update));
}

void BatchScheduler::RemoveFinished() {
  std::erase_if(running_, [](const std::unique_ptr<Sequence>& sequence) { return sequence->finished; });
  running_count_ = static_cast<int64_t>(running_.size());
  RecordCacheUsage();
  // Waiting sequences whose client left or whose deadline passed never take a slot.
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = Clock::now();
  std::erase_if(waiting_, [&](const std::unique_ptr<Sequence>& sequence) {
    if (sequence->handle->cancelled()) {
      Finish(*sequence, absl::CancelledError("cancelled by the client"), FinishReason::kAborted);
      return true;
    }
    if (now >= sequence->params.deadline) {
      Finish(*sequence, absl::DeadlineExceededError("deadline passed while waiting for a batch slot"),
             FinishReason::kAborted);
      return true;
    }
    return false;
  });
}

}  // namespace expertmesh::attention_service
