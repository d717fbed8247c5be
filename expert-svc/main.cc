// expert-svc: loads one shard's routed experts (and nothing else) from a checkpoint and serves
// them over ExpertService with health and reflection; SIGTERM drains in-flight streams.
//   expert-svc --model DIR --shard-index i --num-shards N [--shard-name NAME] [--listen ADDR]
//              [--experts SPEC]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/format/checkpoint.h"
#include "engine/metrics/blend_metrics.h"
#include "engine/metrics/moe_metrics.h"
#include "engine/metrics/service_metrics.h"
#include "engine/model/weight_loader.h"
#include "engine/rpc/command_line.h"
#include "engine/rpc/server_runner.h"
#include "expert-svc/expert_service.h"
#include "expert-svc/expert_shard.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors)");
ABSL_FLAG(int, shard_index, -1, "this shard's index in [0, num_shards)");
ABSL_FLAG(int, num_shards, 0, "how many shards split the routed experts (contiguous ranges)");
ABSL_FLAG(std::string, shard_name, "", "stable name reported by Describe (default shard-<index>)");
ABSL_FLAG(std::string, listen, "0.0.0.0:50061", "listening address");
ABSL_FLAG(std::string, experts, "",
          "explicit experts instead of index/count: \"0-7,12\" for every MoE layer or \"1:0-7;2:0-3\"");
ABSL_FLAG(std::string, weight_set, "", "name of the served weight set (default: the model directory's name)");
ABSL_FLAG(int, max_message_mb, 64, "largest activation payload per request, MiB");
ABSL_FLAG(int, max_tokens_per_request, 65536, "largest num_tokens per request");
ABSL_FLAG(int, drain_seconds, 10, "grace period for in-flight streams on SIGTERM");

namespace expertmesh::expert_service {
namespace {

std::string WeightDtypeName(const Checkpoint& checkpoint, const HostedExperts& hosted) {
  for (const auto& [layer, experts] : hosted) {
    for (int32_t expert : experts) {
      const TensorLocation* location =
          checkpoint.Find(absl::StrCat("model.layers.", layer, ".mlp.experts.", expert, ".down_proj.weight"));
      if (location == nullptr) continue;
      switch (location->dtype) {
        case DType::kF32: return "f32";
        case DType::kBF16: return "bf16";
        case DType::kF16: return "f16";
        case DType::kF8E4M3: return "fp8-e4m3";
      }
    }
  }
  return "unknown";
}

int Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  const int shard_index = absl::GetFlag(FLAGS_shard_index);
  const int num_shards = absl::GetFlag(FLAGS_num_shards);
  const std::string expert_spec = absl::GetFlag(FLAGS_experts);
  if (model_dir.empty()) {
    std::fprintf(stderr, "expert-svc: --model is required\n");
    return 2;
  }
  if (expert_spec.empty() && (num_shards < 1 || shard_index < 0 || shard_index >= num_shards)) {
    std::fprintf(stderr, "expert-svc: need --shard-index in [0, --num-shards) (got %d of %d) or --experts\n",
                 shard_index, num_shards);
    return 2;
  }
  absl::StatusOr<ModelConfig> config = ModelConfig::FromFile(std::filesystem::path(model_dir) / "config.json");
  if (!config.ok()) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  HostedExperts hosted;
  if (!expert_spec.empty()) {
    absl::StatusOr<HostedExperts> parsed = ParseExpertSpec(expert_spec, *config);
    if (!parsed.ok()) {
      std::fprintf(stderr, "expert-svc: --experts: %s\n", std::string(parsed.status().message()).c_str());
      return 2;
    }
    hosted = *std::move(parsed);
  } else {
    hosted = ShardRangeForModel(*config, shard_index, num_shards);
  }
  if (hosted.empty()) {
    std::fprintf(stderr, "expert-svc: this shard would host no experts (model has %lld routed experts)\n",
                 static_cast<long long>(config->n_routed_experts));
    return 2;
  }
  // Metrics before loading, so a wrong --metrics-listen fails at once and loading is observable.
  metrics::ServiceMetrics metrics("expert");
  if (absl::Status serving = metrics.Serve(metrics::MetricsListenFlag()); !serving.ok()) {
    std::fprintf(stderr, "expert-svc: --metrics-listen: %s\n", std::string(serving.message()).c_str());
    return 2;
  }
  if (metrics.server()) std::fprintf(stderr, "expert-svc: metrics at %s\n", metrics.server()->url().c_str());
  (void)metrics.SampleDeviceMemory("cpu", [] { return metrics::ReadHostMemory(); });
  metrics::BlendMetrics blend_metrics(metrics.registry());
  std::vector<int> hosted_layers;
  std::set<int> hosted_expert_ids;
  for (const auto& [layer, experts] : hosted) {
    hosted_layers.push_back(static_cast<int>(layer));
    hosted_expert_ids.insert(experts.begin(), experts.end());
  }
  const std::vector<int> hosted_expert_list(hosted_expert_ids.begin(), hosted_expert_ids.end());
  absl::StatusOr<std::unique_ptr<metrics::ExpertLoadMetrics>> load_metrics =
      metrics::ExpertLoadMetrics::Create(metrics.registry(), hosted_layers, hosted_expert_list);
  if (!load_metrics.ok()) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(load_metrics.status().message()).c_str());
    return 1;
  }
  const auto load_start = std::chrono::steady_clock::now();

  std::string shard_name = absl::GetFlag(FLAGS_shard_name);
  if (shard_name.empty()) shard_name = absl::StrCat("shard-", std::max(shard_index, 0));

  // Only this shard's expert tensors are indexed and read.
  LoadOptions load_options;
  load_options.load_non_expert_weights = false;
  load_options.load_routed_experts = true;
  load_options.expert_filter = [&hosted](int64_t layer, int32_t expert) {
    auto entry = hosted.find(layer);
    return entry != hosted.end() && entry->second.contains(expert);
  };
  auto last_report = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  load_options.progress = [&](const LoadProgress& progress) {
    const auto now = std::chrono::steady_clock::now();
    if (progress.tensors_loaded == progress.tensors_total || now - last_report > std::chrono::seconds(1)) {
      last_report = now;
      std::fprintf(stderr, "expert-svc %s: %s\n", shard_name.c_str(), progress.ToString().c_str());
    }
  };
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
      Checkpoint::Open(model_dir, CheckpointNameFilter(load_options));
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<LoadedWeights> loaded = LoadWeights(**checkpoint, load_options);
  if (!loaded.ok()) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }

  ShardModelInfo info;
  info.model_type = config->model_type;
  info.hidden_size = config->hidden_size;
  info.num_routed_experts = config->n_routed_experts;
  info.weight_dtype = WeightDtypeName(**checkpoint, hosted);
  info.backend = "cpu";
  info.resident_weight_bytes = loaded->routed_experts->ByteSize();
  info.max_tokens_per_request = absl::GetFlag(FLAGS_max_tokens_per_request);
  info.max_activation_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_max_message_mb)) << 20;
  info.weight_set_name = absl::GetFlag(FLAGS_weight_set);
  if (info.weight_set_name.empty()) {
    info.weight_set_name = std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (info.weight_set_name.empty()) info.weight_set_name = std::filesystem::path(model_dir).parent_path().filename().string();
  }
  checkpoint->reset();  // experts are resident as float32; the mapped files are no longer needed
  const int64_t expert_count = loaded->routed_experts->num_experts();
  metrics.resources().SetWeightResidentBytes("cpu", info.resident_weight_bytes);
  blend_metrics.SetWeightSet(info.weight_set_name, info.resident_weight_bytes, info.weight_set_version);
  blend_metrics.RecordSwap(info.weight_set_name, /*success=*/true,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
  ExpertShard shard(shard_name, info, hosted, std::move(loaded->routed_experts));
  ExpertServiceImpl service(&shard);
  service.set_load_metrics(load_metrics->get());

  rpc::ServerOptions server_options;
  server_options.listen_address = absl::GetFlag(FLAGS_listen);
  // The transport limit leaves room above the per-message limit, so an oversized activation
  // payload is a per-message INVALID_ARGUMENT rather than a broken stream.
  server_options.max_message_bytes = static_cast<int>(
      std::min<uint64_t>(info.max_activation_bytes + info.max_activation_bytes / 4 + (1 << 20), 1ull << 30));
  // The service drains itself (below); streams never end on their own, so the server's own grace
  // only has to cover replies being written.
  server_options.drain_grace = std::chrono::milliseconds(500);
  server_options.configure_builder = [&metrics](grpc::ServerBuilder& builder) {
    return metrics.InstallGrpcMetrics(builder, {v1::ExpertService::service_full_name()});
  };
  absl::StatusOr<std::unique_ptr<rpc::ServerRunner>> runner =
      rpc::ServerRunner::Start(server_options, {&service}, v1::ExpertService::service_full_name());
  if (!runner.ok()) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(runner.status().message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "expert-svc %s: serving %lld experts over %zu MoE layers (%.1f MB, weight set '%s') on port %d\n",
               shard_name.c_str(), static_cast<long long>(expert_count), hosted.size(),
               static_cast<double>(info.resident_weight_bytes) / 1e6, info.weight_set_name.c_str(),
               (*runner)->port());
  (*runner)->WaitForTerminationSignal([&] {
    service.StartDraining();
    if (!service.WaitIdle(std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds)))) {
      std::fprintf(stderr, "expert-svc %s: requests still in progress after the drain period\n", shard_name.c_str());
    }
  });
  std::fprintf(stderr, "expert-svc %s: stopped after %llu requests\n", shard_name.c_str(),
               static_cast<unsigned long long>(service.requests_answered()));
  return 0;
}

}  // namespace
}  // namespace expertmesh::expert_service

int main(int argc, char** argv) {
  expertmesh::rpc::BlockTerminationSignals();
  absl::SetProgramUsageMessage(
      "expert-svc --model DIR --shard-index i --num-shards N [--shard-name NAME] [--listen ADDR] [--experts SPEC]");
  std::vector<std::string> arguments = expertmesh::rpc::NormalizeFlagNames(argc, argv);
  std::vector<char*> normalized = expertmesh::rpc::ArgvPointers(arguments);
  absl::ParseCommandLine(static_cast<int>(arguments.size()), normalized.data());
  return expertmesh::expert_service::Run();
}
