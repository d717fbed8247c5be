// Admission control: bounded running + waiting, FIFO hand-over, refusal when full, deadlines.
#include "router-svc/admission_queue.h"

#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace expertmesh::router_service {
namespace {

using Clock = std::chrono::steady_clock;

TEST(AdmissionQueueTest, RefusesWhenRunningAndWaitingAreFull) {
  AdmissionQueue queue(/*max_running=*/1, /*max_waiting=*/1);
  AdmissionQueue::Ticket first;
  ASSERT_TRUE(queue.Admit(Clock::now() + std::chrono::seconds(1), nullptr, &first).ok());
  EXPECT_EQ(queue.running(), 1);

  absl::Status waiter_status;
  std::thread waiter([&] {
    AdmissionQueue::Ticket ticket;
    waiter_status = queue.Admit(Clock::now() + std::chrono::seconds(5), nullptr, &ticket);
  });
  while (queue.waiting() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  AdmissionQueue::Ticket refused;
  const absl::Status full = queue.Admit(Clock::now() + std::chrono::seconds(1), nullptr, &refused);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;

  first = AdmissionQueue::Ticket();  // release: the waiter runs
  waiter.join();
  EXPECT_TRUE(waiter_status.ok()) << waiter_status;
  EXPECT_EQ(queue.running(), 0);
  EXPECT_EQ(queue.waiting(), 0);
}

TEST(AdmissionQueueTest, WaitingRequestTimesOutOrIsCancelled) {
  AdmissionQueue queue(1, 4);
  AdmissionQueue::Ticket holder;
  ASSERT_TRUE(queue.Admit(Clock::now() + std::chrono::seconds(1), nullptr, &holder).ok());
  AdmissionQueue::Ticket ticket;
  EXPECT_EQ(queue.Admit(Clock::now() + std::chrono::milliseconds(30), nullptr, &ticket).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(queue.Admit(Clock::now() + std::chrono::seconds(5), [] { return true; }, &ticket).code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(queue.waiting(), 0);
}

TEST(AdmissionQueueTest, TheObserverSeesEveryChangeOfTheWaitingCount) {
  std::mutex mutex;
  std::vector<int> seen;
  AdmissionQueue queue(1, 2, [&](int waiting) {
    std::lock_guard<std::mutex> lock(mutex);
    seen.push_back(waiting);
  });
  auto snapshot = [&] {
    std::lock_guard<std::mutex> lock(mutex);
    return seen;
  };
  AdmissionQueue::Ticket holder;
  ASSERT_TRUE(queue.Admit(Clock::now() + std::chrono::seconds(1), nullptr, &holder).ok());
  EXPECT_TRUE(snapshot().empty()) << "admitted at once: nobody waited";
  AdmissionQueue::Ticket expired;
  EXPECT_EQ(queue.Admit(Clock::now() + std::chrono::milliseconds(20), nullptr, &expired).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(snapshot(), (std::vector<int>{1, 0})) << "joined, then left at its deadline";

  absl::Status waiter_status;
  std::thread waiter([&] {
    AdmissionQueue::Ticket ticket;
    waiter_status = queue.Admit(Clock::now() + std::chrono::seconds(5), nullptr, &ticket);
  });
  while (queue.waiting() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  holder = AdmissionQueue::Ticket();  // the waiter takes the slot
  waiter.join();
  EXPECT_TRUE(waiter_status.ok()) << waiter_status;
  EXPECT_EQ(snapshot(), (std::vector<int>{1, 0, 1, 0}));
}

}  // namespace
}  // namespace expertmesh::router_service
