// BatchScheduler: continuous batching over one StepModel (the CPU DeepseekModel, or the GPU model
// of attention-svc --device cuda:N, attention-svc/step_model.h). A single scheduler thread runs
// steps; every active sequence takes part in each step (a decode token, or its whole prompt on
// the step it joins), so new prefills join the running batch and a sequence leaves as soon as it
// is done, cancelled or past its deadline. Each sequence owns its latent KV cache and sampler.
// A failed step is retried one sequence at a time, so an expert failure ends only the sequences
// whose tokens needed the failing shard; the others continue. Sequences pinned to different weight
// sets (blend, version) share the iteration but not a Step: each iteration runs one Step per
// weight-set group, with that group's experts, and isolates failures within the group. Results
// reach the RPC handler through a SequenceHandle (a queue of updates), so a slow client never
// stalls the batch.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/metrics/serving_metrics.h"
#include "attention-svc/step_model.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/sampler.h"

namespace expertmesh::attention_service {

using Clock = std::chrono::steady_clock;

struct SchedulerOptions {
  int64_t max_running_sequences = 64;
  int64_t max_waiting_sequences = 256;
  // Prompt tokens admitted into one step (a longer single prompt is still admitted alone).
  int64_t max_prefill_tokens_per_step = 2048;
  // 1, or 2 for micro-batch ping-pong of each step (see DeepseekModel).
  int64_t micro_batches = 1;
  // Upper bound of one step's expert round trips when no sequence has a deadline.
  std::chrono::milliseconds step_timeout{30000};
  // Sequences per step by phase and KV cache usage (token slots in use over max_running_sequences x
  // the model's context length); null = none. Not owned.
  metrics::ServingMetrics* metrics = nullptr;
};

// A validated generation request.
struct SequenceParams {
  std::vector<int32_t> prompt_ids;
  int64_t max_tokens = 1;
  SamplingParams sampling;
  std::vector<int32_t> stop_token_ids;  // including the model's end-of-sequence ids
  bool include_logits = false;
  Clock::time_point deadline = Clock::time_point::max();
  // The sequence's pinned weight set (reported in its usage) and the experts that compute with it
  // for its whole life; null experts = the model's own.
  std::string blend;
  uint64_t blend_version = 0;
  std::shared_ptr<RoutedExperts> experts;
};

enum class FinishReason { kLength, kStop, kAborted };

// One thing that happened to a sequence: a token, or its end.
struct SequenceUpdate {
  bool finished = false;
  int32_t token_id = -1;
  std::vector<float> logits;  // when include_logits
  // When finished: OK with kLength/kStop, or the error that ended it (kAborted).
  absl::Status status;
  FinishReason finish_reason = FinishReason::kLength;
};

// Shared by the scheduler (producer) and the RPC handler (consumer).
class SequenceHandle {
 public:
  // Waits until an update is available or `until`; false on timeout.
  bool WaitNext(SequenceUpdate* update, Clock::time_point until);
  // The client went away: the scheduler drops the sequence at its next step.
  void Cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  friend class BatchScheduler;
  void Push(SequenceUpdate update);

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<SequenceUpdate> updates_;
  std::atomic<bool> cancelled_{false};
};

class BatchScheduler {
 public:
  // `model` must outlive the scheduler.
  BatchScheduler(const DeepseekModel& model, SchedulerOptions options);
  // Any StepModel (not owned, must outlive the scheduler). A sequence's state is created when it
  // leaves the waiting queue, so a model with a fixed number of sequences (the GPU's) needs
  // max_running_sequences <= that number.
  BatchScheduler(StepModel& model, SchedulerOptions options);
  ~BatchScheduler();  // stops the thread; unfinished sequences end UNAVAILABLE

  // Queues a sequence. RESOURCE_EXHAUSTED when the waiting queue is full, UNAVAILABLE when
  // draining. `params` must already be validated against the model.
  absl::StatusOr<std::shared_ptr<SequenceHandle>> Submit(SequenceParams params);

  // Refuses new sequences from now on (running and waiting ones finish).
  void StopAdmitting();
  int64_t running_sequences() const;
  int64_t waiting_sequences() const;
  uint64_t steps() const { return steps_.load(); }

 private:
  struct Sequence;
  void Loop();
  // Moves waiting sequences into the running set within the step limits.
  void Admit();
  // Ends cancelled and expired sequences; returns the ones that take part in the next step.
  std::vector<Sequence*> PrepareStep();
  // Runs one step over `batch`: one Step per weight-set group (RunGroupStep).
  void RunStep(const std::vector<Sequence*>& batch);
  // One Step over sequences sharing a weight set; on failure isolates the failing sequences.
  void RunGroupStep(const std::vector<Sequence*>& group);
  absl::Status StepOnce(const std::vector<Sequence*>& batch);
  void Finish(Sequence& sequence, absl::Status status, FinishReason reason);
  void RemoveFinished();
  void RecordCacheUsage() const;

  void Start();

  std::unique_ptr<StepModel> owned_model_;  // the CPU wrapper of the DeepseekModel constructor
  StepModel& model_;
  const SchedulerOptions options_;

  mutable std::mutex mutex_;  // guards waiting_, admitting_, stopping_
  std::condition_variable work_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  bool admitting_ = true;
  bool stopping_ = false;
  std::atomic<int64_t> running_count_{0};
  std::atomic<uint64_t> steps_{0};

  std::vector<std::unique_ptr<Sequence>> running_;  // scheduler thread only
  std::thread thread_;
};

}  // namespace expertmesh::attention_service
