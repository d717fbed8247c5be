// LoadOptions: one load-test run: where (target and its policy), how hard (closed-loop
// concurrency or open-loop rate), how long (duration and/or request count, both capped), and
// what each request carries (prompt and output length distributions, prompt source, sampling,
// blend mix or A/B keys). ValidateLoadOptions states every limit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "loadtest/blend_mix.h"
#include "loadtest/length_distribution.h"

namespace expertmesh::loadtest {

inline constexpr int64_t kMaxRequests = 1'000'000;
inline constexpr double kMaxDurationSeconds = 24 * 3600;
inline constexpr int kMaxConcurrency = 10'000;
inline constexpr double kMaxRate = 100'000;

enum class Arrival { kConstant, kPoisson };
enum class PromptSource { kTokenIds, kText };

struct LoadOptions {
  std::string target;
  bool allow_remote = false;
  std::vector<std::string> allowed_hosts;
  int connections = 1;

  // Exactly one of: closed loop (concurrency > 0) or open loop (rate > 0 requests/s).
  int concurrency = 0;
  double rate = 0;
  Arrival arrival = Arrival::kPoisson;
  // Open loop: requests due while this many are in flight are not sent (counted as skipped).
  int max_in_flight = 512;

  // At least one limit; the run ends at whichever comes first.
  double duration_seconds = 0;
  int64_t requests = 0;
  double request_timeout_seconds = 120;
  // After the limit: how long in-flight requests may finish before they are cancelled.
  double drain_timeout_seconds = 30;

  LengthDistribution prompt_tokens = LengthDistribution::Fixed(32);
  LengthDistribution max_tokens = LengthDistribution::Fixed(64);
  PromptSource prompt_source = PromptSource::kTokenIds;
  // Token ids are drawn uniformly from [min_token_id, vocab_size).
  int vocab_size = 1536;
  int min_token_id = 2;
  // Text prompts: words of this corpus (prompt length counts words).
  std::vector<std::string> corpus_words;

  float temperature = 0;
  float top_p = 1;
  // Request i uses sampling seed sampling_seed + i; the load tester's own draws use random_seed.
  uint64_t sampling_seed = 0;
  uint64_t random_seed = 1;
  std::vector<std::string> stop;

  // Either a blend named per request (drawn from the mix) or an A/B key drawn from ab_keys
  // distinct keys; neither leaves the blend to the router's default split.
  BlendMix blend_mix;
  int ab_keys = 0;

  // Progress callback period.
  double progress_interval_seconds = 1;
};

absl::Status ValidateLoadOptions(const LoadOptions& options);
// "closed loop, concurrency 8" / "open loop, 20 req/s (poisson), max 512 in flight".
std::string DescribeLoadShape(const LoadOptions& options);

}  // namespace expertmesh::loadtest
