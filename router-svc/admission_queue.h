// AdmissionQueue: bounds the work a router accepts. Up to `max_running` requests run at once;
// up to `max_waiting` more wait in FIFO order; beyond that Admit() refuses at once with
// RESOURCE_EXHAUSTED, so memory never grows without bound. A waiting request gives up at its
// deadline (DEADLINE_EXCEEDED) or when cancelled. An optional observer sees every change of the
// number waiting (the router's expertmesh_requests_waiting gauge follows it exactly).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>

#include "absl/status/status.h"

namespace expertmesh::router_service {

class AdmissionQueue {
 public:
  // `on_waiting_changed(waiting)` runs under the queue's lock after each change of the number of
  // waiting requests: it must be quick and must not call back into the queue.
  AdmissionQueue(int max_running, int max_waiting, std::function<void(int)> on_waiting_changed = nullptr)
      : max_running_(max_running), max_waiting_(max_waiting), on_waiting_changed_(std::move(on_waiting_changed)) {}

  // Releases its slot when destroyed.
  class Ticket {
   public:
    Ticket() = default;
    explicit Ticket(AdmissionQueue* queue) : queue_(queue) {}
    Ticket(Ticket&& other) noexcept : queue_(other.queue_) { other.queue_ = nullptr; }
    Ticket& operator=(Ticket&& other) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket();

   private:
    AdmissionQueue* queue_ = nullptr;
  };

  // Waits for a running slot until `deadline`; `cancelled` is polled while waiting.
  absl::Status Admit(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& cancelled,
                     Ticket* ticket);

  int running() const;
  int waiting() const;

 private:
  void Release();
  void WaitingChanged() const;  // under mutex_

  const int max_running_;
  const int max_waiting_;
  const std::function<void(int)> on_waiting_changed_;
  mutable std::mutex mutex_;
  std::condition_variable slot_freed_;
  int running_ = 0;
  std::deque<uint64_t> waiters_;  // FIFO of waiter ids
  uint64_t next_waiter_ = 0;
};

}  // namespace expertmesh::router_service
