// gpu_services_bench: generation throughput of the services on the GPU — attention-svc and two
// expert-svc shards, all with --device=cuda:0, on loopback — side by side with the monolithic GPU
// model (GpuModel + CudaRoutedExperts in this process, the same prefill-then-decode work, logits
// to the host and greedy picks there as the scheduler does), on bench/services' random checkpoint
// with DeepSeek-V2-Lite widths (so the CPU services benchmark of the same device call measures the
// same model and workload). Prints a Markdown table (also to --markdown). Numbers, not verdicts.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
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

ABSL_FLAG(std::string, work_dir, "/tmp/expertmesh-fanout-bench", "where the random checkpoint is kept");
ABSL_FLAG(std::string, bin_dir, "", "folder whose bin/ holds expert-svc and attention-svc (default: this binary's ../)");
ABSL_FLAG(int, moe_layers, 2, "MoE layers of the random model (after one dense layer)");
ABSL_FLAG(std::string, sequences, "1,8,32", "concurrent sequences");
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
  options.max_sequences = 64;
  options.max_sequence_length = 256;
  options.max_step_tokens = 64 * prompt_tokens;
  auto model = GpuModel::Create(config, weights->weights, experts->get(), options);
  if (!model.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(model.status().message()).c_str()), 1;
  checkpoint->reset();

  std::fprintf(stderr, "bench: starting 2 GPU expert shards and a GPU attention-svc\n");
  testing::ClusterOptions cluster_options;
  cluster_options.model_directory = model_dir;
  cluster_options.num_shards = 2;
  cluster_options.expert_flags = {"--device=cuda:0"};
  cluster_options.attention_flags = {"--device=cuda:0", "--gpu-max-sequence-length=256"};
  auto cluster = testing::ServiceCluster::Start(cluster_options);
  if (!cluster.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(cluster.status().message()).c_str()), 1;

  std::map<int, double> monolithic, services;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (int sequences : batch_sizes) {
      auto mono = MonolithicTokensPerSecond(**model, sequences, prompt_tokens, decode_tokens, config.vocab_size);
      if (!mono.ok()) return std::fprintf(stderr, "bench: %s\n", std::string(mono.status().message()).c_str()), 1;
      const double remote =
          ServicesTokensPerSecond((*cluster)->stub(), sequences, prompt_tokens, decode_tokens, config.vocab_size);
      monolithic[sequences] = std::max(monolithic[sequences], *mono);
      services[sequences] = std::max(services[sequences], remote);
      std::fprintf(stderr, "bench: round %d, %d sequences: monolithic GPU %.1f tok/s, GPU services %.1f tok/s\n",
                   round + 1, sequences, *mono, remote);
    }
  }
  auto device = cuda::DescribeDevice();
  std::string table = absl::StrCat(
      "### Services on the GPU (", device.ok() ? *device : "?", "): attention-svc + 2 expert-svc shards, all with "
      "--device=cuda:0 (bf16), loopback gRPC with f32 activations, vs the monolithic GPU model in one process; ",
      prompt_tokens, "-token prompts, ", decode_tokens, " new tokens each, best of ", absl::GetFlag(FLAGS_rounds),
      " alternating rounds)\n\n| sequences | monolithic GPU tok/s | GPU services tok/s | services / monolithic |\n"
      "|---:|---:|---:|---:|\n");
  for (int sequences : batch_sizes) {
    absl::StrAppendFormat(&table, "| %d | %.1f | %.1f | %.2f |\n", sequences, monolithic[sequences],
                          services[sequences], services[sequences] / monolithic[sequences]);
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
