// End-to-end GPU model benchmark against Hugging Face transformers eager (one device call, after
// hf_baseline.py saved the model and its own timings): loads the same safetensors (non-expert
// weights through the CPU loader, routed experts straight into device memory), then for the same
// prompts times prefill and greedy decode (device loop, with and without a CUDA graph), checks the
// first greedy tokens and last-position logits against HF's, and prints tokens/s and the ratio.
// Usage: gpu_model_bench MODEL_DIR [--profile] (MODEL_DIR/hf_results.json from hf_baseline.py); with
// --profile only one batch-1 decode step per kernel set, between cudaProfilerStart/Stop (for ncu).
#include <cuda_profiler_api.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/format/checkpoint.h"
#include "engine/model/cuda/cuda_expert_loader.h"
#include "engine/model/cuda/gpu_model.h"
#include "engine/model/sampler.h"
#include "engine/model/weight_loader.h"
#include "engine/ops/cuda/cuda_device.h"
#include "engine/ops/cuda/few_token_experts.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void Die(const absl::Status& status, const char* what) {
  if (status.ok()) return;
  std::fprintf(stderr, "FATAL %s: %s\n", what, std::string(status.message()).c_str());
  std::exit(1);
}

struct Prefilled {
  std::vector<int64_t> sequences;
  std::vector<int32_t> first_tokens;
  std::vector<float> row0_logits;
  double seconds = 0;
};

Prefilled Prefill(GpuModel& model, const std::vector<std::vector<int32_t>>& prompts) {
  Prefilled p;
  std::vector<GpuSequenceInput> inputs;
  for (const auto& prompt : prompts) {
    auto s = model.NewSequence();
    Die(s.status(), "NewSequence");
    p.sequences.push_back(*s);
    inputs.push_back({*s, prompt, false});
  }
  const auto start = std::chrono::steady_clock::now();
  auto logits = model.Step(inputs);
  p.seconds = Seconds(start);
  Die(logits.status(), "prefill");
  for (const Tensor& t : *logits) p.first_tokens.push_back(ArgMax(t.values()));
  p.row0_logits.assign((*logits)[0].values().begin(), (*logits)[0].values().end());
  return p;
}

void Release(GpuModel& model, const Prefilled& p) {
  for (int64_t s : p.sequences) model.ReleaseSequence(s);
}

int Run(const std::string& directory, bool profile) {
  std::ifstream in(directory + "/hf_results.json");
  if (!in) {
    std::fprintf(stderr, "no %s/hf_results.json (run hf_baseline.py first)\n", directory.c_str());
    return 1;
  }
  const nlohmann::json hf = nlohmann::json::parse(in);
  auto device = cuda::DescribeDevice();
  Die(device.status(), "device");
  std::printf("device: %s\nHF: %s\n", device->c_str(), hf["info"].dump().c_str());

  auto start = std::chrono::steady_clock::now();
  auto checkpoint = Checkpoint::Open(directory);
  Die(checkpoint.status(), "open");
  LoadOptions load;
  load.load_routed_experts = false;
  auto weights = LoadWeights(**checkpoint, load);
  Die(weights.status(), "non-expert weights");
  const double host_load_s = Seconds(start);
  start = std::chrono::steady_clock::now();
  CudaExpertLoadOptions expert_options;
  expert_options.format = GpuExpertFormat::kBF16;
  int64_t last_quarter = -1;
  expert_options.progress = [&](const CudaExpertLoadProgress& p) {
    const int64_t quarter = p.experts_total > 0 ? 4 * p.experts_loaded / p.experts_total : 4;
    if (quarter != last_quarter) std::printf("%s\n", p.ToString().c_str());
    last_quarter = quarter;
  };
  auto experts = LoadCudaRoutedExperts(**checkpoint, expert_options);
  Die(experts.status(), "experts");
  const double expert_load_s = Seconds(start);
  GpuModelOptions options;
  options.weight_type = cuda::ElementType::kBF16;
  options.max_step_tokens = 4096;
  options.max_logit_rows = 256;
  options.max_sequences = 64;
  options.max_sequence_length = 2048 + 256;
  start = std::chrono::steady_clock::now();
  auto model_or = GpuModel::Create((*checkpoint)->config(), weights->weights, experts->get(), options);
  Die(model_or.status(), "GpuModel");
  GpuModel& model = **model_or;
  CudaRoutedExperts& experts_ref = **experts;
  std::printf("loaded: non-expert weights %.1f s (host, float32), experts %.1f s straight to the GPU, model upload "
              "%.1f s; device: %.2f GB non-expert + %.2f GB experts + %.2f GB KV cache\n",
              host_load_s, expert_load_s, Seconds(start), model.DeviceWeightBytes() / 1e9,
              (*experts)->DeviceWeightBytes() / 1e9, model.DeviceCacheBytes() / 1e9);

  if (profile) {
    // One batch-1 decode step (device loop) per linear-layer path, bracketed for
    // `ncu --profile-from-start off`: the defaults, then the skinny tensor-core linears.
    const auto prompts = hf["decode"][0]["prompts"].get<std::vector<std::vector<int32_t>>>();
    const std::vector<std::vector<int32_t>> one = {prompts[0]};
    const int64_t default_rows = model.options().decode_linear_max_rows;
    for (int skinny = 0; skinny < 2; ++skinny) {
      model.set_decode_linear_max_rows(skinny ? 16 : default_rows);
      Prefilled p = Prefill(model, one);
      Die(model.GenerateGreedy(p.sequences, p.first_tokens, 2, false).status(), "warm-up");
      std::vector<int32_t> next = {0};
      cudaProfilerStart();
      Die(model.GenerateGreedy(p.sequences, next, 1, false).status(), "profiled step");
      cudaProfilerStop();
      Release(model, p);
      std::printf("profiled one decode step with %s linears\n", skinny ? "skinny tensor-core" : "the default");
    }
    model.set_decode_linear_max_rows(default_rows);
    return 0;
  }
  std::vector<std::string> table;
  for (const nlohmann::json& entry : hf["decode"]) {
    const int64_t batch = entry["batch"], steps = entry["steps"];
    const auto prompts = entry["prompts"].get<std::vector<std::vector<int32_t>>>();
    const auto hf_first = entry["first_tokens"].get<std::vector<int32_t>>();
    const auto hf_greedy = entry["greedy"].get<std::vector<std::vector<int32_t>>>();
    const auto hf_logits = entry["last_logits_row0"].get<std::vector<float>>();
    // Warm-up (cuBLAS heuristics, module load), then timed runs on fresh sequences.
    Prefilled warm = Prefill(model, prompts);
    Die(model.GenerateGreedy(warm.sequences, warm.first_tokens, 4, true).status(), "warm-up");
    Release(model, warm);
    // Runs, measured in the same process: 0 device loop and 1 CUDA graph with the defaults; 2 CUDA
    // graph with the other linear-layer path (skinny tensor-core kernels <-> cuBLAS); 3 CUDA graph
    // with the phase-1 launch shapes (cuBLAS for every linear layer with its bf16 conversions,
    // expert grid over every local expert); 4 CUDA graph with the defaults but the other choice of
    // expert kernels for batches of <= 4 tokens (few-token kernels <-> tensor-core kernels).
    double results[5] = {0, 0, 0, 0, 0};
    std::vector<std::vector<int32_t>> tokens[5];
    Prefilled first_run;
    const int64_t default_rows = model.options().decode_linear_max_rows;
    const int64_t other_rows = default_rows > 0 ? 0 : 16;
    const int64_t default_few_tokens = experts_ref.options().few_token_max_tokens;
    const int64_t other_few_tokens = default_few_tokens > 0 ? 0 : cuda::kFewTokenMaxTokens;
    for (int run = 0; run < 5; ++run) {
      model.set_decode_linear_max_rows(run == 2 ? other_rows : run == 3 ? 0 : default_rows);
      experts_ref.set_compact_expert_grid(run != 3);
      experts_ref.set_few_token_max_tokens(run == 4 ? other_few_tokens : default_few_tokens);
      if (run >= 2) {  // warm-up of the other kernels
        Prefilled warm_other = Prefill(model, prompts);
        Die(model.GenerateGreedy(warm_other.sequences, warm_other.first_tokens, 4, true).status(), "warm-up");
        Release(model, warm_other);
      }
      Prefilled p = Prefill(model, prompts);
      const auto t0 = std::chrono::steady_clock::now();
      auto generated = model.GenerateGreedy(p.sequences, p.first_tokens, steps, run >= 1);
      results[run] = Seconds(t0);
      Die(generated.status(), "decode");
      tokens[run] = *generated;
      if (run == 0) first_run = p;
      Release(model, p);
    }
    model.set_decode_linear_max_rows(default_rows);
    experts_ref.set_compact_expert_grid(true);
    experts_ref.set_few_token_max_tokens(default_few_tokens);
    int64_t same_as_phase1 = 0;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < steps && tokens[1][b][i] == tokens[3][b][i]; ++i) ++same_as_phase1;
    }
    // Agreement with HF (bf16 both sides, different kernels: near-ties may flip, so reported).
    double diff = 0, scale = 0;
    for (size_t i = 0; i < hf_logits.size(); ++i) {
      diff = std::max(diff, double(std::abs(first_run.row0_logits[i] - hf_logits[i])));
      scale = std::max(scale, double(std::abs(hf_logits[i])));
    }
    int64_t first_same = 0, prefix0 = 0;
    for (int64_t b = 0; b < batch; ++b) first_same += first_run.first_tokens[b] == hf_first[b];
    for (int64_t i = 0; i < steps && tokens[1][0][i] == hf_greedy[0][i]; ++i) ++prefix0;
    const double hf_tps = entry["decode_tokens_per_s"];
    const double ours_loop = batch * steps / results[0], ours_graph = batch * steps / results[1];
    const double other_graph = batch * steps / results[2], phase1_graph = batch * steps / results[3];
    const double other_experts_graph = batch * steps / results[4];
    const char* default_experts = default_few_tokens > 0 ? "few-token experts" : "tensor-core experts";
    const char* other_experts = default_few_tokens > 0 ? "tensor-core experts" : "few-token experts";
    const char* default_linears = default_rows > 0 ? "skinny linears" : "cuBLAS linears";
    const char* other_linears = default_rows > 0 ? "cuBLAS linears" : "skinny linears";
    std::string grouped = "";
    const std::string key = "decode_b" + std::to_string(batch);
    if (hf["grouped_mm"].contains(key)) {
      const double g = hf["grouped_mm"][key];
      grouped = absl::StrFormat(" | HF grouped_mm %.1f tok/s -> %.1fx", g, ours_graph / g);
    }
    table.push_back(absl::StrFormat(
        "decode batch %3lld: HF eager %8.1f tok/s | ours device loop %8.1f tok/s (%.1fx) | ours CUDA graph (%s) %8.1f "
        "tok/s (%.1fx) | %s, CUDA graph %8.1f tok/s (%.1fx) | phase-1 launch shapes, CUDA graph %8.1f tok/s (%.1fx; "
        "ours/phase-1 %.2fx) | %s, CUDA graph %8.1f tok/s (%s/them %.2fx)%s | graph==loop "
        "tokens: %s | greedy prefix = phase-1 for %lld/%lld tokens | first token = HF for %lld/%lld, seq 0 greedy "
        "prefix %lld/%lld, last logits rel diff %.3g",
        (long long)batch, hf_tps, ours_loop, ours_loop / hf_tps, default_linears, ours_graph, ours_graph / hf_tps,
        other_linears, other_graph, other_graph / hf_tps, phase1_graph, phase1_graph / hf_tps,
        ours_graph / phase1_graph, other_experts, other_experts_graph, default_experts, ours_graph / other_experts_graph,
        grouped,
        tokens[0] == tokens[1] ? "yes" : "NO",
        (long long)same_as_phase1, (long long)(batch * steps), (long long)first_same, (long long)batch,
        (long long)prefix0, (long long)steps, scale > 0 ? diff / scale : diff));
    std::printf("%s\n", table.back().c_str());
    std::fflush(stdout);
  }
  for (const nlohmann::json& entry : hf["prefill"]) {
    const int64_t batch = entry["batch"], length = entry["prompt_len"];
    const auto prompts = entry["prompts"].get<std::vector<std::vector<int32_t>>>();
    std::vector<double> times;
    for (int run = 0; run < 4; ++run) {
      Prefilled p = Prefill(model, prompts);
      if (run > 0) times.push_back(p.seconds);  // run 0 warms up
      Release(model, p);
    }
    std::sort(times.begin(), times.end());
    const double ours = batch * length / times[1];
    const double hf_tps = entry["tokens_per_s"];
    std::string grouped = "";
    const std::string key = absl::StrFormat("prefill_%lldx%lld", (long long)batch, (long long)length);
    if (hf["grouped_mm"].contains(key)) {
      const double g = hf["grouped_mm"][key];
      grouped = absl::StrFormat(" | HF grouped_mm %.0f tok/s -> %.1fx", g, ours / g);
    }
    table.push_back(absl::StrFormat("prefill %lldx%lld: HF eager %.0f tok/s | ours %.0f tok/s (%.1fx)%s",
                                    (long long)batch, (long long)length, hf_tps, ours, ours / hf_tps, grouped));
    std::printf("%s\n", table.back().c_str());
  }
  std::printf("\n== end-to-end summary (%s) ==\n", device->c_str());
  for (const std::string& line : table) std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace
}  // namespace expertmesh

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  if (!expertmesh::cuda::CheckDeviceAvailable().ok()) {
    std::printf("skipped: no GPU\n");
    return 0;
  }
  return expertmesh::Run(argv[1], argc > 2 && std::string(argv[2]) == "--profile");
}
