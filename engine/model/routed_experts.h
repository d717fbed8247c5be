// RoutedExperts: the seam between the model and wherever its routed experts live. The model
// hands over "these tokens, with these expert ids and gate weights, for the experts of layer L";
// an implementation adds each token's weighted sum of expert outputs to `output`. The in-process
// implementation runs them locally; the services put the same call behind gRPC. ComputeAsync
// lets a caller overlap a remote round trip with other work (micro-batch ping-pong).
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <span>

#include "absl/status/status.h"

namespace expertmesh {

struct RoutedExpertBatch {
  int64_t layer = 0;        // model layer index (an MoE layer)
  int64_t num_tokens = 0;
  int64_t hidden_size = 0;
  int64_t top_k = 0;        // expert slots per token
  std::span<const float> activations;   // [num_tokens, hidden_size], the post-attention-norm input
  std::span<const int32_t> expert_ids;  // [num_tokens, top_k], global expert ids; -1 = empty slot
  std::span<const float> gate_weights;  // [num_tokens, top_k], already normalised and scaled
  // Latest moment the result is useful; remote implementations fail with DEADLINE_EXCEEDED past
  // it. max() = no limit beyond the implementation's own.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

class RoutedExperts {
 public:
  virtual ~RoutedExperts() = default;
  // output[t] += sum_k gate_weights[t,k] * Expert_{expert_ids[t,k]}(activations[t]).
  // `output` is [num_tokens, hidden_size]. Errors: unknown layer/expert, sizes, transport.
  virtual absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) = 0;

  // The same computation, started now and finished by the time the returned future is ready (or
  // when it is waited on). `batch` may go away after the call, but the memory its spans and
  // `output` refer to must stay valid and untouched until the future has been waited on; a caller
  // must wait on every future it gets. The default runs Compute before returning.
  virtual std::future<absl::Status> ComputeAsync(const RoutedExpertBatch& batch, std::span<float> output) {
    std::promise<absl::Status> done;
    done.set_value(Compute(batch, output));
    return done.get_future();
  }
};

}  // namespace expertmesh
