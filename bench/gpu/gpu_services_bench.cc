// gpu_services_bench: generation throughput of the services on GPUs — attention-svc and expert-svc
// shards on loopback gRPC — side by side with the monolithic GPU model (GpuModel +
// CudaRoutedExperts in this process, the same prefill-then-decode work, logits to the host and
// greedy picks there as the scheduler does), on bench/services' random checkpoint with
// DeepSeek-V2-Lite widths. On one GPU two shards share cuda:0 with attention-svc; with N >= 2 GPUs
// attention-svc (and the monolithic model) run on cuda:0 and one shard on each other GPU (issue
// 4's distributed setup). Also reports the per-MoE-layer fan-out time (p50/p99) of each run from
// attention-svc's own histogram. Prints a Markdown table (also to --markdown). Numbers, not verdicts.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/services/bench_checkpoint.h"
#include "engine/format/checkpoint.h"
#include "engine/model/cuda/cuda_expert_loader.h"
#include "engine/model/cuda/gpu_model.h"
#include "engine/model/sampler.h"
#include "engine/model/weight_loader.h"
#include "engine/ops/cuda/cuda_device.h"
#include "engine/rpc/command_line.h"
#include "tests/integration/service_cluster.h"
#include "tests/integration/service_process.h"
#include "tests/unit/metrics/exposition_test_util.h"

ABSL_FLAG(std::string, work_dir, "/tmp/expertmesh-fanout-bench", "where the random checkpoint is kept");
ABSL_FLAG(std::string, bin_dir, "", "folder whose bin/ holds expert-svc and attention-svc (default: this binary's ../)");
ABSL_FLAG(int, moe_layers, 2, "MoE layers of the random model (after one dense layer)");
ABSL_FLAG(std::string, sequences, "1,16,64,128", "concurrent sequences");
ABSL_FLAG(int, gpus, 0,
          "GPUs to use (0: every visible one). 1: attention-svc and two shards share cuda:0; N >= 2: attention-svc "
          "and the monolithic model on cuda:0, one expert shard on each of cuda:1..N-1");
ABSL_FLAG(int, micro_batches, 1, "attention-svc --micro-batches (2: one half's expert round trip overlaps the other's "
          "attention)");
ABSL_FLAG(int, prompt_tokens, 16, "prompt tokens per sequence");
ABSL_FLAG(int, decode_tokens, 16, "tokens generated per sequence");
ABSL_FLAG(int, rounds, 2, "alternating rounds (best kept)");
ABSL_FLAG(std::string, markdown, "", "also write the table to this file");

namespace expertmesh::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

std::vector<int32_t> Prompt(int s, int prompt_tokens, int64_t vocab) {
  std::vector<int32_t> prompt;
  for (int t = 0; t < prompt_tokens; ++t) prompt.push_back(static_cast<int32_t>((97 * s + 31 * t + 5) % (vocab - 1)));
  return prompt;
}

// The services: one Generate per sequence, all at once; completion tokens per second.
double ServicesTokensPerSecond(v1::AttentionService::Stub& stub, int sequences, int prompt_tokens, int decode_tokens,
                               int64_t vocab) {
  std::vector<testing::GenerationOutput> outputs(sequences);
  std::vector<std::thread> clients;
  const auto start = Clock::now();
  for (int s = 0; s < sequences; ++s) {
    clients.emplace_back([&, s] {
      outputs[s] = testing::RunGenerate(stub, testing::MakeRequest(Prompt(s, prompt_tokens, vocab), decode_tokens, false),
                                        std::chrono::milliseconds(600000));
    });
  }
  for (auto& client : clients) client.join();
  int64_t tokens = 0;
  for (const auto& output : outputs) {
    if (!output.status.ok()) std::fprintf(stderr, "bench: generate: %s\n", output.status.error_message().c_str());
    tokens += static_cast<int64_t>(output.tokens.size());
  }
  return tokens / Seconds(start);
}

// The monolithic GPU model with the same work: every prompt in one step, then one decode step
// per token for all sequences, greedy on the host from downloaded logits.
absl::StatusOr<double> MonolithicTokensPerSecond(GpuModel& model, int sequences, int prompt_tokens, int decode_tokens,
                                                 int64_t vocab) {
  std::vector<int64_t> ids;
  std::vector<std::vector<int32_t>> prompts, next(sequences, std::vector<int32_t>(1));
  for (int s = 0; s < sequences; ++s) {
    auto id = model.NewSequence();
    if (!id.ok()) return id.status();
    ids.push_back(*id);
    prompts.push_back(Prompt(s, prompt_tokens, vocab));
  }
  const auto start = Clock::now();
  int64_t tokens = 0;
  absl::Status status;
  for (int step = 0; step < decode_tokens && status.ok(); ++step) {
    std::vector<GpuSequenceInput> inputs;
    for (int s = 0; s < sequences; ++s) {
      inputs.push_back({ids[s], step == 0 ? std::span<const int32_t>(prompts[s]) : std::span<const int32_t>(next[s]),
                        false});
    }
    auto logits = model.Step(inputs);
    if (!logits.ok()) {
      status = logits.status();
      break;
    }
    for (int s = 0; s < sequences; ++s) next[s][0] = ArgMax((*logits)[s].values());
    tokens += sequences;
  }
  const double seconds = Seconds(start);
  for (int64_t id : ids) model.ReleaseSequence(id);
  if (!status.ok()) return status;
  return tokens / seconds;
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int value = 0;
    if (absl::SimpleAtoi(item, &value)) values.push_back(value);
  }
  return values;
}

// Cumulative bucket counts (upper bound -> count) of attention-svc's per-MoE-layer fan-out
// histogram, scraped from its /metrics.
using Buckets = std::map<double, double>;

absl::StatusOr<Buckets> ScrapeLayerFanout(int metrics_port) {
  absl::StatusOr<metrics::testing::HttpResponse> response = metrics::testing::HttpGet(metrics_port, "/metrics");
  if (!response.ok()) return response.status();
  absl::StatusOr<metrics::testing::Exposition> parsed = metrics::testing::ParseExposition(response->body);
  if (!parsed.ok()) return parsed.status();
  const std::string prefix = "expertmesh_moe_layer_fanout_seconds_bucket{";
  Buckets buckets;
  for (const auto& [key, value] : parsed->samples) {
    if (key.rfind(prefix, 0) != 0) continue;
    const size_t at = key.find("le=\"");
    if (at == std::string::npos) continue;
    const std::string bound = key.substr(at + 4, key.find('"', at + 4) - (at + 4));
    double upper = 0;
    if (bound == "+Inf") {
      upper = std::numeric_limits<double>::infinity();
    } else if (!absl::SimpleAtod(bound, &upper)) {
      continue;
    }
    buckets[upper] += value;
  }
  if (buckets.empty()) return absl::NotFoundError("attention-svc exports no expertmesh_moe_layer_fanout_seconds");
  return buckets;
}

// The q-quantile of the observations between two scrapes, interpolated linearly inside its bucket
// (so only as fine as the histogram's buckets); -1 when there were none.
double Quantile(const Buckets& before, const Buckets& after, double q) {
  std::vector<std::pair<double, double>> counts;  // upper bound, cumulative count in the window
  for (const auto& [upper, count] : after) {
    const auto was = before.find(upper);
    counts.push_back({upper, count - (was == before.end() ? 0.0 : was->second)});
  }
  if (counts.empty() || counts.back().second <= 0) return -1;
  const double target = q * counts.back().second;
  double lower = 0, below = 0;
  for (const auto& [upper, cumulative] : counts) {
    if (cumulative >= target) {
      if (std::isinf(upper)) return lower;  // beyond the last finite bound
      const double inside = cumulative - below;
      return inside <= 0 ? upper : lower + (upper - lower) * (target - below) / inside;
    }
    lower = upper;
    below = cumulative;
  }
  return lower;
}

int Run(const char* argv0) {
  if (absl::Status gpu = cuda::CheckDeviceAvailable(); !gpu.ok()) {
    std::printf("skipped: no GPU (%s)\n", std::string(gpu.message()).c_str());
    return 0;
  }
  std::string bin_dir = absl::GetFlag(FLAGS_bin_dir);
  if (bin_dir.empty()) bin_dir = std::filesystem::canonical(argv0).parent_path().parent_path().string();
  setenv("EXPERTMESH_BINARY_DIR", bin_dir.c_str(), 1);
  BenchModelShape shape;
  shape.moe_layers = absl::GetFlag(FLAGS_moe_layers);
  const std::string model_dir = absl::GetFlag(FLAGS_work_dir) + "/model";
  if (absl::Status status = EnsureBenchCheckpoint(model_dir, shape); !status.ok()) {
    std::fprintf(stderr, "bench: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  const int prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens), decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  const std::vector<int> batch_sizes = ParseList(absl::GetFlag(FLAGS_sequences));
  if (batch_sizes.empty()) return std::fprintf(stderr, "bench: --sequences names no batch size\n"), 1;
  const int largest_batch = *std::max_element(batch_sizes.begin(), batch_sizes.end());
  auto visible = cuda::DeviceCount();
  if (!visible.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(visible.status().message()).c_str()), 1;
  const int gpus = absl::GetFlag(FLAGS_gpus) > 0 ? std::min(absl::GetFlag(FLAGS_gpus), *visible) : *visible;

  // The monolithic GPU model: non-expert weights through the CPU loader, experts straight to the card.
  auto checkpoint = Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(checkpoint.status().message()).c_str()), 1;
  const ModelConfig config = (*checkpoint)->config();
  LoadOptions load;
  load.load_routed_experts = false;
  auto weights = LoadWeights(**checkpoint, load);
  if (!weights.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(weights.status().message()).c_str()), 1;
  auto experts = LoadCudaRoutedExperts(**checkpoint, CudaExpertLoadOptions{});
  if (!experts.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(experts.status().message()).c_str()), 1;
  GpuModelOptions options;
  options.max_sequences = largest_batch;
  options.max_sequence_length = 256;
  options.max_step_tokens = int64_t(largest_batch) * prompt_tokens;
  auto model = GpuModel::Create(config, weights->weights, experts->get(), options);
  if (!model.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(model.status().message()).c_str()), 1;
  checkpoint->reset();

  // Placement: one GPU, two shards beside attention-svc; several, one shard per GPU after the first.
  testing::ClusterOptions cluster_options;
  cluster_options.model_directory = model_dir;
  std::string placement;
  if (gpus >= 2) {
    cluster_options.num_shards = gpus - 1;
    for (int shard = 0; shard < gpus - 1; ++shard) {
      cluster_options.shard_flags.push_back({absl::StrCat("--device=cuda:", shard + 1)});
    }
    placement = absl::StrCat("attention-svc on cuda:0, ", gpus - 1, " expert-svc shard(s) on cuda:1..", gpus - 1);
  } else {
    cluster_options.num_shards = 2;
    cluster_options.expert_flags = {"--device=cuda:0"};
    placement = "attention-svc + 2 expert-svc shards, all on cuda:0";
  }
  const int metrics_port = testing::PickFreePort();
  cluster_options.attention_flags = {"--device=cuda:0", "--gpu-max-sequence-length=256",
                                     absl::StrCat("--max-running-sequences=", largest_batch),
                                     absl::StrCat("--max-prefill-tokens-per-step=", largest_batch * prompt_tokens),
                                     absl::StrCat("--metrics-listen=127.0.0.1:", metrics_port),
                                     absl::StrCat("--micro-batches=", absl::GetFlag(FLAGS_micro_batches))};
  std::fprintf(stderr, "bench: starting %s\n", placement.c_str());
  auto cluster = testing::ServiceCluster::Start(cluster_options);
  if (!cluster.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(cluster.status().message()).c_str()), 1;

  std::map<int, double> monolithic, services, fanout_p50, fanout_p99;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (int sequences : batch_sizes) {
      auto mono = MonolithicTokensPerSecond(**model, sequences, prompt_tokens, decode_tokens, config.vocab_size);
      if (!mono.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(mono.status().message()).c_str()), 1;
      const absl::StatusOr<Buckets> before = ScrapeLayerFanout(metrics_port);
      const double remote =
          ServicesTokensPerSecond((*cluster)->stub(), sequences, prompt_tokens, decode_tokens, config.vocab_size);
      const absl::StatusOr<Buckets> after = ScrapeLayerFanout(metrics_port);
      monolithic[sequences] = std::max(monolithic[sequences], *mono);
      if (remote > services[sequences]) {  // the fan-out times of the kept (best) round
        services[sequences] = remote;
        fanout_p50[sequences] = before.ok() && after.ok() ? Quantile(*before, *after, 0.5) : -1;
        fanout_p99[sequences] = before.ok() && after.ok() ? Quantile(*before, *after, 0.99) : -1;
      }
      if (!after.ok()) std::fprintf(stderr, "bench: scrape: %s\n", std::string(after.status().message()).c_str());
      std::fprintf(stderr, "bench: round %d, %d sequences: monolithic GPU %.1f tok/s, GPU services %.1f tok/s\n",
                   round + 1, sequences, *mono, remote);
    }
  }
  std::string devices;
  for (int index = 0; index < gpus; ++index) {
    auto device = cuda::DescribeDevice(index);
    absl::StrAppend(&devices, index == 0 ? "" : "; ", "cuda:", index, " ", device.ok() ? *device : "?");
  }
  std::string table = absl::StrCat(
      "### Services on GPUs (", devices, "): ", placement, " (bf16), loopback gRPC with f32 activations, vs the "
      "monolithic GPU model on cuda:0 in one process; ", prompt_tokens, "-token prompts, ", decode_tokens,
      " new tokens each, attention-svc --micro-batches=", absl::GetFlag(FLAGS_micro_batches), ", best of ",
      absl::GetFlag(FLAGS_rounds), " alternating rounds; fan-out = attention-svc's "
      "time for one MoE layer's replies from every shard, from its histogram (interpolated inside buckets)\n\n"
      "| sequences | monolithic GPU tok/s | GPU services tok/s | services / monolithic | fan-out p50 ms | "
      "fan-out p99 ms |\n|---:|---:|---:|---:|---:|---:|\n");
  const auto milliseconds = [](double seconds) {
    return seconds < 0 ? std::string("n/a") : absl::StrFormat("%.2f", seconds * 1e3);
  };
  for (int sequences : batch_sizes) {
    absl::StrAppendFormat(&table, "| %d | %.1f | %.1f | %.2f | %s | %s |\n", sequences, monolithic[sequences],
                          services[sequences], services[sequences] / monolithic[sequences],
                          milliseconds(fanout_p50[sequences]), milliseconds(fanout_p99[sequences]));
  }
  std::printf("%s\n", table.c_str());
  if (const std::string path = absl::GetFlag(FLAGS_markdown); !path.empty()) std::ofstream(path) << table;
  return 0;
}

}  // namespace
}  // namespace expertmesh::bench

int main(int argc, char** argv) {
  expertmesh::rpc::ParseDashedCommandLine(argc, argv);
  return expertmesh::bench::Run(argv[0]);
}
