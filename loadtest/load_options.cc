// LoadOptions validation and description.
#include "loadtest/load_options.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "loadtest/target_policy.h"

namespace expertmesh::loadtest {

absl::Status ValidateLoadOptions(const LoadOptions& options) {
  if (absl::Status allowed = CheckTargetAllowed(options.target, options.allow_remote, options.allowed_hosts);
      !allowed.ok()) {
    return allowed;
  }
  auto invalid = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if ((options.concurrency > 0) == (options.rate > 0)) {
    return invalid("choose exactly one of --concurrency (closed loop) and --rate (open loop)");
  }
  if (options.concurrency < 0 || options.concurrency > kMaxConcurrency) {
    return invalid("--concurrency must be 1..", kMaxConcurrency);
  }
  if (options.rate < 0 || options.rate > kMaxRate || !std::isfinite(options.rate)) {
    return invalid("--rate must be in (0, ", kMaxRate, "] requests/s");
  }
  if (options.max_in_flight < 1 || options.max_in_flight > kMaxConcurrency) {
    return invalid("--max-in-flight must be 1..", kMaxConcurrency);
  }
  if (options.connections < 1 || options.connections > 64) return invalid("--connections must be 1..64");
  if (options.duration_seconds <= 0 && options.requests <= 0) {
    return invalid("give --duration and/or --requests: every run is bounded");
  }
  if (options.duration_seconds < 0 || options.duration_seconds > kMaxDurationSeconds ||
      !std::isfinite(options.duration_seconds)) {
    return invalid("--duration must be at most ", kMaxDurationSeconds, " s");
  }
  if (options.requests < 0 || options.requests > kMaxRequests) return invalid("--requests must be at most ", kMaxRequests);
  if (!(options.request_timeout_seconds > 0) || options.request_timeout_seconds > 3600) {
    return invalid("--timeout must be in (0, 3600] s");
  }
  if (options.drain_timeout_seconds < 0 || options.drain_timeout_seconds > 3600) return invalid("--drain-timeout must be 0..3600 s");
  if (options.prompt_source == PromptSource::kTokenIds &&
      (options.min_token_id < 0 || options.vocab_size <= options.min_token_id)) {
    return invalid("token ids need 0 <= --min-token-id < --vocab-size");
  }
  if (options.prompt_source == PromptSource::kText && options.corpus_words.empty()) {
    return invalid("text prompts need a --corpus file with words in it");
  }
  if (!(options.temperature >= 0) || !(options.top_p >= 0 && options.top_p <= 1)) {
    return invalid("need --temperature >= 0 and 0 <= --top-p <= 1");
  }
  if (!options.blend_mix.empty() && options.ab_keys > 0) return invalid("choose one of --blend-mix and --ab-keys");
  if (options.ab_keys < 0 || options.ab_keys > 1'000'000) return invalid("--ab-keys must be 0..1000000");
  if (!(options.progress_interval_seconds > 0)) return invalid("progress interval must be > 0");
  return absl::OkStatus();
}

std::string DescribeLoadShape(const LoadOptions& options) {
  if (options.concurrency > 0) return absl::StrCat("closed loop, concurrency ", options.concurrency);
  return absl::StrCat("open loop, ", options.rate, " req/s (",
                      options.arrival == Arrival::kPoisson ? "poisson" : "constant", "), max ",
                      options.max_in_flight, " in flight");
}

}  // namespace expertmesh::loadtest
