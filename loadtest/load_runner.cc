// LoadRunner: callback-API Generate calls, closed/open-loop scheduling, drain and progress.
#include "loadtest/load_runner.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "expertmesh/v1/router_service.grpc.pb.h"

namespace expertmesh::loadtest {
namespace {

using Clock = std::chrono::steady_clock;
namespace v1 = expertmesh::v1;

double Seconds(Clock::duration duration) { return std::chrono::duration<double>(duration).count(); }

const char* FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_ABORTED:
      return "aborted";
    default:
      return "unspecified";
  }
}

double Median(std::vector<double> values) {
  if (values.empty()) return -1;
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

class Call;

// Shared state of a run: in-flight calls, results, counters. All under one mutex.
struct RunState {
  std::mutex mutex;
  std::condition_variable changed;
  std::set<Call*> in_flight;
  std::vector<RequestResult> results;
  int64_t started = 0;
  int64_t failed = 0;
  int64_t skipped = 0;
  int64_t generated_tokens = 0;
  size_t progress_cursor = 0;  // results before this were in an earlier progress report
  Clock::time_point origin;
};

class Call final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  Call(RunState& state, v1::GenerateRequest request, int prompt_tokens, double timeout_seconds)
      : state_(state), request_(std::move(request)) {
    result_.prompt_tokens = prompt_tokens;
    result_.max_tokens = static_cast<int>(request_.max_tokens());
    result_.requested_blend = request_.blend();
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::microseconds(static_cast<int64_t>(timeout_seconds * 1e6)));
  }

  // The call is registered in state_.in_flight before this runs.
  void Start(v1::RouterService::Stub& stub) {
    start_ = Clock::now();
    result_.start_seconds = Seconds(start_ - state_.origin);
    stub.async()->Generate(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (response_.has_delta()) {
      const v1::TokenDelta& delta = response_.delta();
      if (result_.time_to_first_token_seconds < 0 && (delta.token_ids_size() > 0 || !delta.text().empty())) {
        result_.time_to_first_token_seconds = Seconds(Clock::now() - start_);
      }
      counted_tokens_ += delta.token_ids_size();
    } else if (response_.has_usage()) {
      const v1::Usage& usage = response_.usage();
      result_.has_usage = true;
      result_.generated_tokens = usage.completion_tokens();
      // The router's count (text prompts are sent as words).
      if (usage.prompt_tokens() > 0) result_.prompt_tokens = static_cast<int>(usage.prompt_tokens());
      result_.blend = usage.blend();
      result_.blend_version = usage.blend_version();
      result_.finish_reason = FinishReasonName(usage.finish_reason());
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    result_.end_to_end_seconds = Seconds(Clock::now() - start_);
    result_.code = status.error_code();
    result_.error_message = status.error_message();
    if (!result_.has_usage) result_.generated_tokens = counted_tokens_;
    {
      std::lock_guard<std::mutex> lock(state_.mutex);
      if (!result_.ok()) ++state_.failed;
      state_.generated_tokens += result_.generated_tokens;
      state_.results.push_back(std::move(result_));
      state_.in_flight.erase(this);
    }
    state_.changed.notify_all();
    delete this;
  }

 private:
  RunState& state_;
  grpc::ClientContext context_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  RequestResult result_;
  int64_t counted_tokens_ = 0;
  Clock::time_point start_;
};

// Channels live for the whole process, one per (target, connection index). With gRPC's
// poll-based I/O manager the callback API runs reactions on a shared "CallbackAlternativeCQ"
// thread pool that is torn down when the last callback channel goes away; if that last release
// happens on one of its own threads (a call finishing after its run's stubs are gone) gRPC 1.51
// trips "grpc_cq_internal_unref: prior > 0" and aborts (grpc/grpc#32584). Keeping the channels
// means the pool is never torn down mid-process.
std::shared_ptr<grpc::Channel> SharedChannel(const std::string& target, int index) {
  static std::mutex mutex;
  static auto* channels = new std::map<std::pair<std::string, int>, std::shared_ptr<grpc::Channel>>();
  std::lock_guard<std::mutex> lock(mutex);
  auto& channel = (*channels)[{target, index}];
  if (!channel) {
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one TCP connection per channel
    arguments.SetInt("expertmesh.loadtest.channel", index);
    arguments.SetMaxReceiveMessageSize(64 << 20);
    channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
  }
  return channel;
}

}  // namespace

v1::GenerateRequest BuildRequest(const LoadOptions& options, int64_t index, std::mt19937_64& random,
                                 int* prompt_tokens) {
  v1::GenerateRequest request;
  int length = options.prompt_tokens.Sample(random);
  *prompt_tokens = length;
  if (options.prompt_source == PromptSource::kTokenIds) {
    std::uniform_int_distribution<int> token(options.min_token_id, options.vocab_size - 1);
    auto* ids = request.mutable_token_ids();
    for (int i = 0; i < length; ++i) ids->add_ids(token(random));
  } else {
    const auto& words = options.corpus_words;
    size_t start = std::uniform_int_distribution<size_t>(0, words.size() - 1)(random);
    std::string text;
    for (int i = 0; i < length; ++i) absl::StrAppend(&text, i == 0 ? "" : " ", words[(start + i) % words.size()]);
    request.set_text(std::move(text));
  }
  request.set_max_tokens(static_cast<uint32_t>(options.max_tokens.Sample(random)));
  request.mutable_sampling()->set_temperature(options.temperature);
  request.mutable_sampling()->set_top_p(options.top_p);
  request.mutable_sampling()->set_seed(options.sampling_seed + static_cast<uint64_t>(index));
  for (const std::string& stop : options.stop) request.add_stop(stop);
  if (!options.blend_mix.empty()) {
    request.set_blend(options.blend_mix.Pick(random));
  } else if (options.ab_keys > 0) {
    request.set_ab_key(absl::StrCat("loadtest-", std::uniform_int_distribution<int>(0, options.ab_keys - 1)(random)));
  }
  return request;
}

absl::StatusOr<RunResult> LoadRunner::Run(const std::function<void(const Progress&)>& on_progress,
                                          const std::atomic<bool>* stop) {
  if (absl::Status valid = ValidateLoadOptions(options_); !valid.ok()) return valid;
  std::vector<std::unique_ptr<v1::RouterService::Stub>> stubs;
  for (int i = 0; i < options_.connections; ++i) {
    stubs.push_back(v1::RouterService::NewStub(SharedChannel(options_.target, i)));
  }

  RunState state;
  state.origin = Clock::now();
  std::mt19937_64 random(options_.random_seed);
  const bool limited_by_time = options_.duration_seconds > 0;
  const Clock::time_point end_time =
      limited_by_time ? state.origin + std::chrono::microseconds(static_cast<int64_t>(options_.duration_seconds * 1e6))
                      : Clock::time_point::max();
  const int64_t request_limit = options_.requests > 0 ? options_.requests : kMaxRequests;
  auto stop_requested = [&] { return stop != nullptr && stop->load(); };

  std::atomic<bool> progress_done{false};
  std::thread progress_thread;
  if (on_progress) {
    progress_thread = std::thread([&] {
      const auto period = std::chrono::microseconds(static_cast<int64_t>(options_.progress_interval_seconds * 1e6));
      std::unique_lock<std::mutex> lock(state.mutex);
      while (!progress_done.load()) {
        state.changed.wait_for(lock, period, [&] { return progress_done.load(); });
        Progress progress;
        progress.elapsed_seconds = Seconds(Clock::now() - state.origin);
        progress.started = state.started;
        progress.finished = static_cast<int64_t>(state.results.size());
        progress.failed = state.failed;
        progress.in_flight = static_cast<int64_t>(state.in_flight.size());
        progress.skipped = state.skipped;
        progress.generated_tokens = state.generated_tokens;
        std::vector<double> ttft, e2e;
        for (size_t i = state.progress_cursor; i < state.results.size(); ++i) {
          if (!state.results[i].ok()) continue;
          e2e.push_back(state.results[i].end_to_end_seconds);
          if (state.results[i].time_to_first_token_seconds >= 0) ttft.push_back(state.results[i].time_to_first_token_seconds);
        }
        state.progress_cursor = state.results.size();
        progress.recent_ttft_p50_seconds = Median(std::move(ttft));
        progress.recent_e2e_p50_seconds = Median(std::move(e2e));
        lock.unlock();
        on_progress(progress);
        lock.lock();
      }
    });
  }

  // Starts request number state.started. Called with the lock held; releases it around
  // StartCall because gRPC may run the call's reactions inline on this thread.
  auto start_one = [&](std::unique_lock<std::mutex>& lock) {
    int prompt_tokens = 0;
    v1::GenerateRequest request = BuildRequest(options_, state.started, random, &prompt_tokens);
    auto* call = new Call(state, std::move(request), prompt_tokens, options_.request_timeout_seconds);
    state.in_flight.insert(call);
    v1::RouterService::Stub& stub = *stubs[state.started % stubs.size()];
    ++state.started;
    lock.unlock();
    call->Start(stub);
    lock.lock();
  };
  const auto poll = std::chrono::milliseconds(50);  // how often a stop request is noticed

  {
    std::unique_lock<std::mutex> lock(state.mutex);
    if (options_.concurrency > 0) {
      while (state.started < request_limit && Clock::now() < end_time && !stop_requested()) {
        if (static_cast<int>(state.in_flight.size()) >= options_.concurrency) {
          state.changed.wait_until(lock, std::min(end_time, Clock::now() + poll));
          continue;
        }
        start_one(lock);
      }
    } else {
      std::exponential_distribution<double> gap(options_.rate);
      Clock::time_point next = state.origin;
      while (state.started + state.skipped < request_limit && next < end_time && !stop_requested()) {
        if (Clock::now() < next) {
          state.changed.wait_until(lock, std::min(next, Clock::now() + poll));
          continue;
        }
        if (static_cast<int>(state.in_flight.size()) >= options_.max_in_flight) {
          ++state.skipped;
        } else {
          start_one(lock);
        }
        double seconds = options_.arrival == Arrival::kPoisson ? gap(random) : 1.0 / options_.rate;
        next += std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
      }
    }
    // Drain: in-flight calls may finish until the drain deadline, then are cancelled.
    const Clock::time_point drain_end =
        Clock::now() + std::chrono::microseconds(static_cast<int64_t>(options_.drain_timeout_seconds * 1e6));
    while (!state.in_flight.empty() && Clock::now() < drain_end && !stop_requested()) {
      state.changed.wait_until(lock, std::min(drain_end, Clock::now() + poll));
    }
  }
  RunResult run;
  {
    std::unique_lock<std::mutex> lock(state.mutex);
    run.cancelled_at_end = static_cast<int64_t>(state.in_flight.size());
    for (Call* call : state.in_flight) call->Cancel();
    state.changed.wait(lock, [&] { return state.in_flight.empty(); });
    run.wall_seconds = Seconds(Clock::now() - state.origin);
    run.skipped = state.skipped;
    run.interrupted = stop_requested();
  }
  progress_done.store(true);
  state.changed.notify_all();
  if (progress_thread.joinable()) progress_thread.join();
  std::lock_guard<std::mutex> lock(state.mutex);
  run.requests = std::move(state.results);
  std::sort(run.requests.begin(), run.requests.end(),
            [](const RequestResult& a, const RequestResult& b) { return a.start_seconds < b.start_seconds; });
  return run;
}

}  // namespace expertmesh::loadtest
