// AttentionPool against real gRPC servers on loopback (scripted replicas): model info from
// Describe, least-outstanding choice, benching on UNAVAILABLE, recovery, and unreachable replicas.
#include "router-svc/attention_pool.h"

#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/router/fake_attention_service.h"

namespace expertmesh::router_service {
namespace {

AttentionPoolOptions FastProbes() {
  AttentionPoolOptions options;
  options.probe_interval = std::chrono::milliseconds(50);
  options.probe_timeout = std::chrono::milliseconds(500);
  return options;
}

TEST(AttentionPoolTest, DescribesTheModelAndPrefersTheLeastLoadedReplica) {
  auto first = FakeReplica::Start({.vocab_size = 321, .max_position_embeddings = 99});
  auto second = FakeReplica::Start({.vocab_size = 321, .max_position_embeddings = 99});
  ASSERT_TRUE(first && second);
  auto pool = AttentionPool::Create({first->address(), second->address()}, FastProbes());
  EXPECT_EQ(pool->num_healthy(), 2);
  auto info = pool->model_info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->vocab_size, 321u);
  EXPECT_EQ(info->max_position_embeddings, 99u);

  auto a = pool->Acquire();
  ASSERT_TRUE(a.ok());
  auto b = pool->Acquire();
  ASSERT_TRUE(b.ok());
  EXPECT_NE(a->index(), b->index()) << "the second request must go to the idle replica";
  {
    auto c = pool->Acquire();
    ASSERT_TRUE(c.ok());
    // Now one replica holds two requests; releasing a lease on the other makes it the choice.
    const int busy = c->index();
    const int other = 1 - busy;
    if (a->index() == other) a = AttentionPool::Lease(); else b = AttentionPool::Lease();
    for (int i = 0; i < 4; ++i) {
      auto next = pool->Acquire();
      ASSERT_TRUE(next.ok());
      EXPECT_EQ(next->index(), other);
    }
  }
  const auto snapshot = pool->Snapshot();
  ASSERT_EQ(snapshot.size(), 2u);
  EXPECT_EQ(snapshot[0].requests_started + snapshot[1].requests_started, 7u);
}

TEST(AttentionPoolTest, ExcludedAndBenchedReplicasAreSkippedUntilAProbeRestoresThem) {
  auto first = FakeReplica::Start({});
  auto second = FakeReplica::Start({});
  ASSERT_TRUE(first && second);
  AttentionPoolOptions slow = FastProbes();
  slow.probe_interval = std::chrono::milliseconds(300);
  auto pool = AttentionPool::Create({first->address(), second->address()}, slow);
  for (int i = 0; i < 4; ++i) {
    auto lease = pool->Acquire({0});
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(lease->index(), 1);
  }
  EXPECT_EQ(pool->Acquire({0, 1}).status().code(), absl::StatusCode::kUnavailable);

  pool->ReportUnavailable(1);
  EXPECT_EQ(pool->num_healthy(), 1);
  auto lease = pool->Acquire();
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->index(), 0);
  // Replica 1 is in fact fine: the next probe brings it back.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (pool->num_healthy() < 2 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(pool->num_healthy(), 2);
}

TEST(AttentionPoolTest, StoppedReplicaTurnsUnhealthyAndUnreachableOnesNeverServe) {
  auto first = FakeReplica::Start({});
  ASSERT_TRUE(first);
  auto pool = AttentionPool::Create({first->address(), "127.0.0.1:1"}, FastProbes());
  EXPECT_EQ(pool->num_healthy(), 1);
  EXPECT_TRUE(pool->WaitForHealthy(std::chrono::milliseconds(100)));
  first->runner->Shutdown();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (pool->num_healthy() > 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(pool->num_healthy(), 0);
  const auto none = pool->Acquire();
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(none.status().message().find("no healthy attention replica"), std::string::npos) << none.status();
  EXPECT_TRUE(pool->model_info().ok()) << "what was learnt from Describe stays known";
}

TEST(AttentionPoolTest, NothingReachableMeansNoModelInfo) {
  auto pool = AttentionPool::Create({"127.0.0.1:1"}, FastProbes());
  EXPECT_EQ(pool->num_healthy(), 0);
  EXPECT_FALSE(pool->WaitForHealthy(std::chrono::milliseconds(100)));
  EXPECT_EQ(pool->model_info().status().code(), absl::StatusCode::kUnavailable);
}

TEST(AttentionPoolTest, ReplicaOfAnotherModelIsNeverUsed) {
  auto first = FakeReplica::Start({.vocab_size = 1536});
  auto other_model = FakeReplica::Start({.vocab_size = 32000});
  ASSERT_TRUE(first && other_model);
  auto pool = AttentionPool::Create({first->address()}, FastProbes());
  ASSERT_EQ(pool->num_healthy(), 1);
  auto mixed = AttentionPool::Create({first->address(), other_model->address()}, FastProbes());
  // Whichever answered Describe first defines the model; exactly one replica is usable.
  EXPECT_EQ(mixed->num_healthy(), 1);
}

}  // namespace
}  // namespace expertmesh::router_service
