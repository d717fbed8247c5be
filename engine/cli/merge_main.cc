// expertmesh-merge RECIPE OUT_DIR: the offline Assembly-of-Experts merge. Reads a JSON recipe
// (docs/blends.md), merges the parents with MergeCheckpoint and writes a complete checkpoint
// (config.json, sharded safetensors + index, tokenizer files, merge_report.json). Progress on
// stderr; Ctrl-C cancels cleanly (no partial output left behind); bad recipes exit 2.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "engine/merge/checkpoint_merge.h"
#include "engine/merge/recipe.h"

ABSL_FLAG(double, max_shard_mb, 5000.0, "tensor megabytes (1e6 bytes) per output shard");

namespace expertmesh {
namespace {

absl::Status Run(const std::string& recipe_path, const std::string& out_dir, std::stop_token stop) {
  absl::StatusOr<Recipe> recipe = LoadRecipeFile(recipe_path);
  if (!recipe.ok()) return recipe.status();
  const double shard_mb = absl::GetFlag(FLAGS_max_shard_mb);
  if (!(shard_mb > 0.0)) return absl::InvalidArgumentError("--max_shard_mb must be > 0");
  if (const double sum = recipe->LambdaSum(); std::abs(sum - 1.0) > 1e-6) {
    std::cerr << "note: lambdas sum to " << sum << ", not 1 (allowed: the blend is scaled accordingly)\n";
  }
  CheckpointMergeOptions options;
  options.max_shard_bytes = static_cast<uint64_t>(shard_mb * 1e6);
  options.stop = stop;
  // At most four updates a second, plus the final one.
  auto last_shown = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  options.progress = [&](const MergeProgress& progress) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_shown >= std::chrono::milliseconds(250) || progress.tensors_done == progress.tensors_total) {
      last_shown = now;
      std::cerr << "\r" << progress.ToString() << std::flush;
    }
  };
  absl::StatusOr<MergeReport> report = MergeCheckpoint(*recipe, out_dir, options);
  std::cerr << "\n";
  if (!report.ok()) return report.status();
  std::cout << report->Summary() << "\n" << "wrote " << out_dir << " (report: merge_report.json)\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace expertmesh

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("expertmesh-merge RECIPE.json OUT_DIR [--max_shard_mb MB]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 3) {
    std::cerr << "usage: expertmesh-merge RECIPE.json OUT_DIR [--max_shard_mb MB]\n";
    return 2;
  }
  // SIGINT/SIGTERM request a stop from a watcher thread (stop_source is not signal-safe).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::stop_source stop;
  std::thread([signals, stop]() mutable {
    int received = 0;
    if (sigwait(&signals, &received) == 0) {
      std::cerr << "\ncancelling merge...\n";
      stop.request_stop();
    }
  }).detach();

  absl::Status status = expertmesh::Run(positional[1], positional[2], stop.get_token());
  if (!status.ok()) {
    std::cerr << "error: " << status << "\n";
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
