// ThreadedExperts: a RoutedExperts test double around real experts that answers ComputeAsync on
// another thread (a stand-in for a remote round trip), counts those calls, and can be told to fail
// at one layer (UNAVAILABLE "shard down"). Used by the micro-batch tests of the CPU and GPU models.
#pragma once

#include <atomic>
#include <cstdint>
#include <future>
#include <span>

#include "absl/status/status.h"
#include "engine/model/routed_experts.h"

namespace expertmesh::testing {

class ThreadedExperts : public RoutedExperts {
 public:
  explicit ThreadedExperts(RoutedExperts* inner) : inner_(inner) {}
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override {
    return ComputeAsync(batch, output).get();
  }
  std::future<absl::Status> ComputeAsync(const RoutedExpertBatch& batch, std::span<float> output) override {
    ++async_calls;
    return std::async(std::launch::async, [this, batch, output] {
      if (batch.layer == fail_layer) return absl::UnavailableError("shard down");
      return inner_->Compute(batch, output);
    });
  }
  std::atomic<int> async_calls{0};
  std::atomic<int64_t> fail_layer{-1};

 private:
  RoutedExperts* inner_;
};

}  // namespace expertmesh::testing
