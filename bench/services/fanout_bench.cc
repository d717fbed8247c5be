// fanout_bench: measures the distributed expert path on real processes over loopback, side by
// side with the in-process engine, on a V2-Lite-width random checkpoint:
//  1. per-MoE-layer fan-out latency (p50/p99) for 1/16/64/256 tokens to 1/2/4 expert-svc shards,
//     f32 and bf16 on the wire, with bytes/s per shard and the in-process compute time of the
//     same batch (remote and in-process calls alternate, so both see the same machine load);
//  2. generation throughput (tokens/s) of attention-svc + shards vs the monolithic engine running
//     the same scheduler in-process, with and without micro-batch ping-pong (alternating rounds).
// Prints Markdown tables (and writes them to --markdown). Not a test: numbers, not verdicts.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "attention-svc/batch_scheduler.h"
#include "attention-svc/expert_fanout.h"
#include "bench/services/bench_checkpoint.h"
#include "engine/core/status_macros.h"
#include "engine/format/checkpoint.h"
#include "engine/model/weight_loader.h"
#include "engine/rpc/command_line.h"
#include "tests/integration/service_cluster.h"

ABSL_FLAG(std::string, work_dir, "/tmp/expertmesh-fanout-bench", "where the random checkpoint is kept");
ABSL_FLAG(std::string, bin_dir, "", "folder whose bin/ holds expert-svc and attention-svc (default: this binary's ../)");
ABSL_FLAG(int, moe_layers, 2, "MoE layers of the random model (after one dense layer)");
ABSL_FLAG(std::string, shards, "1,2,4", "shard counts for the fan-out latency table");
ABSL_FLAG(std::string, tokens, "1,16,64,256", "tokens per MoE call");
ABSL_FLAG(int, iterations, 20, "timed calls per point (after 3 warm-up calls)");
ABSL_FLAG(std::string, wire, "f32,bf16", "wire dtypes to measure");
ABSL_FLAG(std::string, decode_sequences, "1,8,32", "concurrent sequences for the throughput table");
ABSL_FLAG(int, decode_tokens, 16, "tokens generated per sequence");
ABSL_FLAG(int, prompt_tokens, 16, "prompt tokens per sequence");
ABSL_FLAG(int, rounds, 2, "alternating measurement rounds for the throughput table (best kept)");
ABSL_FLAG(int, throughput_shards, 2, "expert shards behind attention-svc for the throughput table");
ABSL_FLAG(std::string, markdown, "", "also write the tables to this file");
ABSL_FLAG(bool, split_cores, true,
          "give each spawned process an equal share of the cores (OPENBLAS_NUM_THREADS), so shards and "
          "attention-svc do not oversubscribe the machine");
ABSL_FLAG(std::string, tables, "fanout,throughput", "which tables to produce");

namespace expertmesh::bench {
namespace {

using Clock = std::chrono::steady_clock;

// OPENBLAS_NUM_THREADS for processes spawned from now on: the cores split over `processes`.
void ShareCores(int processes) {
  if (!absl::GetFlag(FLAGS_split_cores)) return;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::string threads = std::to_string(std::max(1, cores / std::max(1, processes)));
  setenv("OPENBLAS_NUM_THREADS", threads.c_str(), 1);
  std::fprintf(stderr, "bench: %s BLAS thread(s) per spawned process\n", threads.c_str());
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int value = 0;
    if (absl::SimpleAtoi(item, &value)) values.push_back(value);
  }
  return values;
}

double Percentile(std::vector<double> samples, double fraction) {
  std::sort(samples.begin(), samples.end());
  const size_t index = std::min(samples.size() - 1, static_cast<size_t>(fraction * (samples.size() - 1) + 0.5));
  return samples[index];
}

// A routed batch like the model's: distinct experts per token, positive weights summing to 1.
struct SyntheticBatch {
  std::vector<float> activations;
  std::vector<int32_t> expert_ids;
  std::vector<float> gate_weights;
  RoutedExpertBatch View(const ModelConfig& config, int64_t layer, int64_t tokens) const {
    RoutedExpertBatch batch;
    batch.layer = layer;
    batch.num_tokens = tokens;
    batch.hidden_size = config.hidden_size;
    batch.top_k = config.num_experts_per_tok;
    batch.activations = activations;
    batch.expert_ids = expert_ids;
    batch.gate_weights = gate_weights;
    return batch;
  }
};

SyntheticBatch MakeBatch(const ModelConfig& config, int64_t tokens, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  SyntheticBatch batch;
  batch.activations.resize(tokens * config.hidden_size);
  for (float& value : batch.activations) value = normal(random);
  std::vector<int32_t> experts(config.n_routed_experts);
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(experts.begin(), experts.end(), 0);
    std::shuffle(experts.begin(), experts.end(), random);
    float sum = 0.0f;
    for (int64_t k = 0; k < config.num_experts_per_tok; ++k) {
      batch.expert_ids.push_back(experts[k]);
      batch.gate_weights.push_back(0.1f + std::abs(normal(random)));
      sum += batch.gate_weights.back();
    }
    for (int64_t k = 0; k < config.num_experts_per_tok; ++k) batch.gate_weights[t * config.num_experts_per_tok + k] /= sum;
  }
  return batch;
}

// The experts of one layer loaded in this process: the shard's own work without the transport.
absl::StatusOr<std::unique_ptr<LocalRoutedExperts>> LoadLocalLayer(const std::string& model_dir, int64_t layer) {
  LoadOptions options;
  options.load_non_expert_weights = false;
  options.expert_filter = [layer](int64_t l, int32_t) { return l == layer; };
  EXPERTMESH_ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(model_dir, CheckpointNameFilter(options)));
  EXPERTMESH_ASSIGN_OR_RETURN(LoadedWeights loaded, LoadWeights(*checkpoint, options));
  return std::move(loaded.routed_experts);
}

double Milliseconds(Clock::duration duration) { return std::chrono::duration<double, std::milli>(duration).count(); }

// Remote and in-process calls alternate, so both see the same machine load (this machine is
// shared): the ratio column is the robust one.
std::string FanoutTable(const std::string& model_dir, const ModelConfig& config, int64_t layer) {
  const std::vector<int> token_counts = ParseList(absl::GetFlag(FLAGS_tokens));
  const int iterations = absl::GetFlag(FLAGS_iterations);
  auto local = LoadLocalLayer(model_dir, layer);
  if (!local.ok()) return absl::StrCat("local experts: ", local.status().message(), "\n");
  std::string table = absl::StrCat(
      "### Fan-out latency of one MoE layer (layer ", layer, ", top-", config.num_experts_per_tok, " of ",
      config.n_routed_experts, " experts, hidden ", config.hidden_size, "; ", iterations, " calls per row)\n\n",
      "| shards | wire | tokens | p50 ms | p99 ms | in-process p50 ms | p50 ratio | MB/s per shard |\n",
      "|---:|---|---:|---:|---:|---:|---:|---:|\n");
  for (int shards : ParseList(absl::GetFlag(FLAGS_shards))) {
    testing::ClusterOptions options;
    options.model_directory = model_dir;
    options.num_shards = shards;
    options.start_attention = false;
    std::fprintf(stderr, "bench: starting %d expert shard(s)\n", shards);
    ShareCores(shards);
    auto cluster = testing::ServiceCluster::Start(options);
    if (!cluster.ok()) {
      std::fprintf(stderr, "bench: %s\n", std::string(cluster.status().message()).c_str());
      continue;
    }
    const std::vector<std::string> wires = absl::StrSplit(absl::GetFlag(FLAGS_wire), ',', absl::SkipWhitespace());
    for (const std::string& wire : wires) {
      attention_service::FanoutOptions fanout_options;
      fanout_options.wire_dtype = wire == "bf16" ? v1::TENSOR_DTYPE_BF16 : v1::TENSOR_DTYPE_F32;
      auto fanout = attention_service::ExpertFanout::Create(config, (*cluster)->shard_addresses(), fanout_options);
      if (!fanout.ok()) {
        std::fprintf(stderr, "bench: %s\n", std::string(fanout.status().message()).c_str());
        continue;
      }
      auto payload_bytes = [&] {
        uint64_t total = 0;
        for (const auto& connection : (*fanout)->connections()) {
          total += connection->payload_bytes_sent() + connection->payload_bytes_received();
        }
        return total;
      };
      for (int tokens : token_counts) {
        const SyntheticBatch batch = MakeBatch(config, tokens, tokens);
        const RoutedExpertBatch view = batch.View(config, layer, tokens);
        std::vector<float> output(tokens * config.hidden_size);
        std::vector<double> remote, in_process, ratios;
        double remote_seconds = 0.0;
        uint64_t bytes = 0;
        for (int i = 0; i < iterations + 2; ++i) {
          std::fill(output.begin(), output.end(), 0.0f);
          auto start = Clock::now();
          const uint64_t bytes_before = payload_bytes();
          const absl::Status status = (*fanout)->Compute(view, output);
          const double remote_ms = Milliseconds(Clock::now() - start);
          if (!status.ok()) std::fprintf(stderr, "bench: %s\n", std::string(status.message()).c_str());
          const uint64_t call_bytes = payload_bytes() - bytes_before;
          std::fill(output.begin(), output.end(), 0.0f);
          start = Clock::now();
          (void)(*local)->Compute(view, output);
          const double local_ms = Milliseconds(Clock::now() - start);
          if (i < 2) continue;  // warm-up
          remote.push_back(remote_ms);
          in_process.push_back(local_ms);
          ratios.push_back(remote_ms / local_ms);
          remote_seconds += remote_ms / 1e3;
          bytes += call_bytes;
        }
        const double p50 = Percentile(remote, 0.5);
        absl::StrAppendFormat(&table, "| %d | %s | %d | %.2f | %.2f | %.2f | %.2f | %.1f |\n", shards, wire, tokens, p50,
                              Percentile(remote, 0.99), Percentile(in_process, 0.5), Percentile(ratios, 0.5),
                              bytes / remote_seconds / 1e6 / shards);
        std::fprintf(stderr, "bench: %d shard(s) %s %d tokens: p50 %.2f ms (in-process %.2f ms)\n", shards,
                     wire.c_str(), tokens, p50, Percentile(in_process, 0.5));
      }
    }
  }
  return table + "\n";
}

// Generation of `sequences` concurrent requests; returns completion tokens per second.
double MonolithicTokensPerSecond(const DeepseekModel& model, int sequences, int prompt_tokens, int decode_tokens,
                                 int64_t vocab) {
  attention_service::SchedulerOptions options;
  options.micro_batches = 1;
  attention_service::BatchScheduler scheduler(model, options);
  std::vector<std::shared_ptr<attention_service::SequenceHandle>> handles;
  const auto start = Clock::now();
  for (int s = 0; s < sequences; ++s) {
    attention_service::SequenceParams params;
    for (int t = 0; t < prompt_tokens; ++t) params.prompt_ids.push_back(static_cast<int32_t>((97 * s + 31 * t + 5) % (vocab - 1)));
    params.max_tokens = decode_tokens;
    handles.push_back(*scheduler.Submit(params));
  }
  int64_t tokens = 0;
  for (auto& handle : handles) {
    attention_service::SequenceUpdate update;
    while (true) {
      if (!handle->WaitNext(&update, Clock::now() + std::chrono::seconds(600))) break;
      if (update.finished) break;
      ++tokens;
    }
  }
  return tokens / std::chrono::duration<double>(Clock::now() - start).count();
}

double DistributedTokensPerSecond(v1::AttentionService::Stub& stub, int sequences, int prompt_tokens,
                                  int decode_tokens, int64_t vocab) {
  std::vector<testing::GenerationOutput> outputs(sequences);
  std::vector<std::thread> clients;
  const auto start = Clock::now();
  for (int s = 0; s < sequences; ++s) {
    clients.emplace_back([&, s] {
      std::vector<int32_t> prompt;
      for (int t = 0; t < prompt_tokens; ++t) prompt.push_back(static_cast<int32_t>((97 * s + 31 * t + 5) % (vocab - 1)));
      outputs[s] = testing::RunGenerate(stub, testing::MakeRequest(prompt, decode_tokens, false),
                                        std::chrono::milliseconds(600000));
    });
  }
  for (auto& client : clients) client.join();
  int64_t tokens = 0;
  for (const auto& output : outputs) {
    if (!output.status.ok()) std::fprintf(stderr, "bench: generate: %s\n", output.status.error_message().c_str());
    tokens += static_cast<int64_t>(output.tokens.size());
  }
  return tokens / std::chrono::duration<double>(Clock::now() - start).count();
}

// Monolithic, distributed with 1 and with 2 micro-batches, measured in alternation (`rounds`
// times, best kept) so that all three see the same machine load.
std::string ThroughputTable(const std::string& model_dir, const ModelConfig& config) {
  const std::vector<int> batch_sizes = ParseList(absl::GetFlag(FLAGS_decode_sequences));
  const int prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const int decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  const int shards = absl::GetFlag(FLAGS_throughput_shards);
  std::fprintf(stderr, "bench: loading the monolithic model\n");
  auto monolithic = LoadModelFromDirectory(model_dir);
  if (!monolithic.ok()) return absl::StrCat("monolithic model: ", monolithic.status().message(), "\n");

  testing::ClusterOptions options;
  options.model_directory = model_dir;
  options.num_shards = shards;
  options.start_attention = false;
  ShareCores(shards + 1);
  auto cluster = testing::ServiceCluster::Start(options);
  if (!cluster.ok()) return absl::StrCat("cluster: ", cluster.status().message(), "\n");
  // One attention-svc per micro-batch setting, both in front of the same shards (one is idle
  // while the other is measured).
  std::map<int, std::unique_ptr<testing::ServiceProcess>> attention;
  std::map<int, std::unique_ptr<v1::AttentionService::Stub>> stubs;
  for (int micro_batches : {1, 2}) {
    auto process = testing::ServiceProcess::Start(
        absl::StrCat("bench-attention-", micro_batches), testing::BinaryPath("attention-svc"),
        {"--model=" + model_dir, "--expert-shards=" + absl::StrJoin((*cluster)->shard_addresses(), ","),
         absl::StrCat("--micro-batches=", micro_batches)});
    if (!process.ok()) return absl::StrCat("attention-svc: ", process.status().message(), "\n");
    stubs[micro_batches] = v1::AttentionService::NewStub(
        grpc::CreateChannel((*process)->address(), grpc::InsecureChannelCredentials()));
    attention[micro_batches] = *std::move(process);
  }
  std::map<std::string, std::map<int, double>> best;  // mode -> sequences -> tok/s
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (int sequences : batch_sizes) {
      auto keep = [&](const std::string& mode, double value) {
        best[mode][sequences] = std::max(best[mode][sequences], value);
        std::fprintf(stderr, "bench: round %d, %d sequences, %s: %.2f tokens/s\n", round + 1, sequences, mode.c_str(),
                     value);
      };
      keep("monolithic", MonolithicTokensPerSecond(*monolithic->model, sequences, prompt_tokens, decode_tokens,
                                                   config.vocab_size));
      keep("1", DistributedTokensPerSecond(*stubs[1], sequences, prompt_tokens, decode_tokens, config.vocab_size));
      keep("2", DistributedTokensPerSecond(*stubs[2], sequences, prompt_tokens, decode_tokens, config.vocab_size));
    }
  }
  std::string table = absl::StrCat("### Generation throughput (", prompt_tokens, "-token prompts, ", decode_tokens,
                                   " new tokens each; attention-svc + ", shards,
                                   " expert-svc shards vs the same scheduler in-process; best of ",
                                   absl::GetFlag(FLAGS_rounds), " alternating rounds)\n\n",
                                   "| sequences | monolithic tok/s | distributed, 1 micro-batch | ratio | "
                                   "distributed, 2 micro-batches | ratio | 2 vs 1 micro-batches |\n",
                                   "|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int sequences : batch_sizes) {
    const double mono = best["monolithic"][sequences], one = best["1"][sequences], two = best["2"][sequences];
    absl::StrAppendFormat(&table, "| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", sequences, mono, one,
                          one / mono, two, two / mono, two / one);
  }
  return table + "\n";
}

int Run(const char* argv0) {
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
  auto config = ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok()) return 1;
  const unsigned cores = std::thread::hardware_concurrency();
  std::string report = absl::StrFormat(
      "## Services benchmark (%u CPU cores; CPU backend, loopback gRPC, f32 experts in memory; %s)\n\n", cores,
      absl::GetFlag(FLAGS_split_cores) ? "each spawned process gets cores / processes BLAS threads"
                                       : "BLAS threads not limited");
  const std::string tables = absl::GetFlag(FLAGS_tables);
  if (tables.find("fanout") != std::string::npos) report += FanoutTable(model_dir, *config, /*layer=*/1);
  if (tables.find("throughput") != std::string::npos) report += ThroughputTable(model_dir, *config);
  std::printf("%s", report.c_str());
  if (const std::string path = absl::GetFlag(FLAGS_markdown); !path.empty()) std::ofstream(path) << report;
  return 0;
}

}  // namespace
}  // namespace expertmesh::bench

int main(int argc, char** argv) {
  expertmesh::rpc::ParseDashedCommandLine(argc, argv);
  return expertmesh::bench::Run(argv[0]);
}
