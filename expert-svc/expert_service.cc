// Stream loop of the expert shard's Compute RPC: a reader (the handler thread) and a worker.
#include "expert-svc/expert_service.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <span>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace expertmesh::expert_service {
namespace {

using Clock = std::chrono::steady_clock;

struct QueuedRequest {
  v1::ExpertRequest request;
  Clock::time_point arrival;
};

void SetError(const v1::ExpertRequest& request, const absl::Status& status, v1::ExpertReply* reply) {
  reply->Clear();
  reply->set_request_id(request.request_id());
  reply->mutable_error()->set_code(static_cast<int>(status.code()));
  reply->mutable_error()->set_message(std::string(status.message()));
}

}  // namespace

grpc::Status ExpertServiceImpl::Compute(grpc::ServerContext* context,
                                        grpc::ServerReaderWriter<v1::ExpertReply, v1::ExpertRequest>* stream) {
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<QueuedRequest> queue;
  bool reading_done = false;
  bool worker_stopped = false;  // the peer went away or cancelled

  auto stop_worker = [&] {
    std::lock_guard<std::mutex> lock(mutex);
    worker_stopped = true;
    requests_in_progress_ -= static_cast<int64_t>(queue.size());
    queue.clear();
    changed.notify_all();
  };
  std::thread worker([&] {
    while (true) {
      QueuedRequest item;
      {
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] { return !queue.empty() || reading_done; });
        if (queue.empty()) return;
        item = std::move(queue.front());
        queue.pop_front();
      }
      changed.notify_all();  // room in the queue for the reader
      // From here this request is answered (or dropped with the stream) by this iteration.
      struct Done {
        std::atomic<int64_t>& counter;
        ~Done() { --counter; }
      } done{requests_in_progress_};
      if (context->IsCancelled()) return stop_worker();
      const v1::ExpertRequest& request = item.request;
      const auto timeout = std::chrono::microseconds(request.timeout_micros());
      v1::ExpertReply reply;
      absl::Status status;
      if (draining_) {
        status = absl::UnavailableError(absl::StrCat("expert shard ", shard_->shard_name(), " is shutting down"));
      } else if (request.timeout_micros() > 0 && Clock::now() - item.arrival > timeout) {
        status = absl::DeadlineExceededError(absl::StrCat("request ", request.request_id(), " waited beyond its timeout of ",
                                                          request.timeout_micros(), " us before computing"));
      } else {
        status = shard_->Handle(request, &reply);
        if (status.ok() && request.timeout_micros() > 0 && Clock::now() - item.arrival > timeout) {
          status = absl::DeadlineExceededError(absl::StrCat("request ", request.request_id(),
                                                            " took longer than its timeout of ",
                                                            request.timeout_micros(), " us"));
        }
      }
      if (!status.ok()) SetError(request, status, &reply);
      if (status.ok() && load_metrics_) {
        load_metrics_->RecordTokens(static_cast<int>(request.layer()),
                                    std::span<const int32_t>(request.expert_ids().data(), request.expert_ids().size()));
      }
      ++requests_answered_;
      if (!stream->Write(reply)) return stop_worker();  // the peer went away
    }
  });

  v1::ExpertRequest request;
  while (stream->Read(&request)) {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&] { return queue.size() < max_queued_requests_ || worker_stopped; });
    if (worker_stopped) break;
    ++requests_in_progress_;
    queue.push_back({std::move(request), Clock::now()});
    changed.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    reading_done = true;
  }
  changed.notify_all();
  worker.join();
  if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
  return grpc::Status::OK;
}

bool ExpertServiceImpl::WaitIdle(std::chrono::milliseconds timeout) const {
  const auto give_up = Clock::now() + timeout;
  while (requests_in_progress_.load() > 0) {
    if (Clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

grpc::Status ExpertServiceImpl::Describe(grpc::ServerContext*, const v1::DescribeExpertShardRequest*,
                                         v1::ExpertShardDescription* response) {
  if (draining_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "expert shard is shutting down");
  *response = shard_->Describe();
  return grpc::Status::OK;
}

}  // namespace expertmesh::expert_service
