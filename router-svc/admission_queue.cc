// Bounded FIFO admission.
#include "router-svc/admission_queue.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace expertmesh::router_service {

AdmissionQueue::Ticket& AdmissionQueue::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    if (queue_) queue_->Release();
    queue_ = other.queue_;
    other.queue_ = nullptr;
  }
  return *this;
}

AdmissionQueue::Ticket::~Ticket() {
  if (queue_) queue_->Release();
}

absl::Status AdmissionQueue::Admit(std::chrono::steady_clock::time_point deadline,
                                   const std::function<bool()>& cancelled, Ticket* ticket) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (running_ < max_running_ && waiters_.empty()) {
    ++running_;
    *ticket = Ticket(this);
    return absl::OkStatus();
  }
  if (static_cast<int>(waiters_.size()) >= max_waiting_) {
    return absl::ResourceExhaustedError(absl::StrCat("server busy: ", running_, " requests running and ",
                                                     waiters_.size(), " waiting (limit ", max_waiting_, ")"));
  }
  const uint64_t id = next_waiter_++;
  waiters_.push_back(id);
  WaitingChanged();
  auto leave = [&] {
    waiters_.erase(std::find(waiters_.begin(), waiters_.end(), id));
    WaitingChanged();
    slot_freed_.notify_all();
  };
  while (!(running_ < max_running_ && waiters_.front() == id)) {
    const auto wake = std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
    slot_freed_.wait_until(lock, wake);
    if (std::chrono::steady_clock::now() >= deadline) {
      leave();
      return absl::DeadlineExceededError("deadline exceeded while waiting for admission");
    }
    if (cancelled && cancelled()) {
      leave();
      return absl::CancelledError("cancelled while waiting for admission");
    }
  }
  waiters_.pop_front();
  WaitingChanged();
  ++running_;
  *ticket = Ticket(this);
  slot_freed_.notify_all();
  return absl::OkStatus();
}

void AdmissionQueue::WaitingChanged() const {
  if (on_waiting_changed_) on_waiting_changed_(static_cast<int>(waiters_.size()));
}

void AdmissionQueue::Release() {
  std::lock_guard<std::mutex> lock(mutex_);
  --running_;
  slot_freed_.notify_all();
}

int AdmissionQueue::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

int AdmissionQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(waiters_.size());
}

}  // namespace expertmesh::router_service
