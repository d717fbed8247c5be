// Admission control: bounded running + waiting, FIFO hand-over, refusal when full, deadlines.
#include "router-svc/admission_queue.h"

#include <thread>

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

}  // namespace
}  // namespace expertmesh::router_service
