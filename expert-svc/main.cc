// expert-svc: loads one shard's routed experts (and nothing else) from a checkpoint and serves
// them over ExpertService with health and reflection; SIGTERM drains in-flight streams.
//   expert-svc --model DIR --shard-index i --num-shards N [--shard-name NAME] [--listen ADDR]
//              [--experts SPEC] [--weight-budget-mb MB] [--admin-token-file FILE] [--recipes-dir DIR]
// The checkpoint is the first weight set; ExpertAdminService (same port) loads more parents and
// builds live blends. With --device cuda:N the experts live on that GPU: the checkpoint's go
// straight from the file to the card in their stored format (FP8 stays FP8), sets built through
// the admin API are uploaded from the host.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/format/checkpoint.h"
#include "engine/metrics/blend_metrics.h"
#include "engine/metrics/moe_metrics.h"
#include "engine/metrics/service_metrics.h"
#include "engine/model/weight_loader.h"
#include "engine/ops/cuda/compute_device.h"
#include "engine/rpc/admin_token.h"
#include "engine/rpc/command_line.h"
#include "engine/rpc/server_runner.h"
#include "expert-svc/expert_admin_service.h"
#include "expert-svc/expert_backend.h"
#include "expert-svc/expert_service.h"
#include "expert-svc/expert_shard.h"
#include "expert-svc/weight_set_builder.h"
#include "expert-svc/weight_set_store.h"
#if defined(EXPERTMESH_HAS_CUDA)
#include "engine/ops/cuda/cuda_device.h"
#include "expert-svc/gpu_experts.h"
#endif

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
ABSL_FLAG(int64_t, weight_budget_mb, 0,
          "memory for all weight sets (MB, shared tensors counted once); a load or blend beyond it is "
          "RESOURCE_EXHAUSTED; 0 = no limit");
ABSL_FLAG(std::string, admin_token_file, "",
          "file holding the admin API's bearer token (a Kubernetes Secret mount); without it every admin call "
          "is UNAUTHENTICATED");
ABSL_FLAG(std::string, recipes_dir, "", "directory of blend recipe files that admin calls may name");
ABSL_FLAG(std::string, device, "cpu", "where the experts live: cpu, or cuda:N (cuda = cuda:0; needs a CUDA build)");
ABSL_FLAG(std::string, gpu_expert_format, "auto",
          "GPU experts: auto (as stored: bf16, FP8 block-scaled, f32), bf16, fp8 (FP8 checkpoints) or f32");
ABSL_FLAG(std::string, gpu_expert_path, "auto",
          "GPU experts' products: auto (measured choice by batch size), kernels (tensor-core kernels), "
          "cublas_streams, cublas_batched, few_tokens (batches of <= 4 tokens) or cublas_fp8 (FP8 experts, "
          "activations rounded to FP8 too)");
ABSL_FLAG(bool, gpu_fp8_activations, true,
          "FP8 experts on the GPU, batches of 256 tokens or 64 rows per expert: round activations to FP8 too (W8A8 "
          "block-scaled cuBLASLt GEMMs, as DeepSeek-V3's own inference does; ~2.7x faster prefill on an H100); "
          "false keeps activations bf16 (tensor-core kernels, or weights dequantized for larger batches)");
ABSL_FLAG(bool, gpu_direct_load, true,
          "on the GPU, load the checkpoint's experts straight from the file to the card (stored format); false: "
          "through the weight-set store's host copy (bf16/f32 on the card), so the admin API can blend it");

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
  absl::StatusOr<ComputeDevice> device = ParseComputeDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(device.status().message()).c_str());
    return 2;
  }
  if (device->is_cuda && !kBuiltWithCuda) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(CudaNotBuiltError(*device).message()).c_str());
    return 2;
  }
#if defined(EXPERTMESH_HAS_CUDA)
  if (device->is_cuda) {
    if (absl::Status usable = cuda::UseDevice(device->index); !usable.ok()) {
      std::fprintf(stderr, "expert-svc: --device=%s: %s\n", device->ToString().c_str(),
                   std::string(usable.message()).c_str());
      return 1;
    }
  }
#endif
  const std::string device_label = device->ToString();
  // Metrics before loading, so a wrong --metrics-listen fails at once and loading is observable.
  metrics::ServiceMetrics metrics("expert");
  if (absl::Status serving = metrics.Serve(metrics::MetricsListenFlag()); !serving.ok()) {
    std::fprintf(stderr, "expert-svc: --metrics-listen: %s\n", std::string(serving.message()).c_str());
    return 2;
  }
  if (metrics.server()) std::fprintf(stderr, "expert-svc: metrics at %s\n", metrics.server()->url().c_str());
  (void)metrics.SampleDeviceMemory("cpu", [] { return metrics::ReadHostMemory(); });
#if defined(EXPERTMESH_HAS_CUDA)
  if (device->is_cuda) {
    (void)metrics.SampleDeviceMemory(device_label, [index = device->index]() -> absl::StatusOr<metrics::DeviceMemory> {
      metrics::DeviceMemory memory;
      if (absl::Status status = cuda::DeviceMemoryInUse(index, &memory.used_bytes, &memory.total_bytes); !status.ok()) {
        return status;
      }
      return memory;
    });
  }
#endif
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

  std::string shard_name = absl::GetFlag(FLAGS_shard_name);
  if (shard_name.empty()) shard_name = absl::StrCat("shard-", std::max(shard_index, 0));

  // The served checkpoint is the first parent weight set; more parents and blends come through the
  // admin API. Only this shard's expert tensors are indexed and read.
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(model_dir, ShardTensorFilter(hosted));
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  WeightSetStoreOptions store_options;
  store_options.shard_name = shard_name;
  store_options.model = *config;
  store_options.hosted = hosted;
  store_options.budget_bytes = static_cast<uint64_t>(std::max<int64_t>(absl::GetFlag(FLAGS_weight_budget_mb), 0)) << 20;
  store_options.recipes_dir = absl::GetFlag(FLAGS_recipes_dir);
  store_options.log_progress = true;
  std::unique_ptr<ExpertBackend> backend = MakeCpuExpertBackend();
#if defined(EXPERTMESH_HAS_CUDA)
  if (device->is_cuda) {
    absl::StatusOr<ExpertGemmPath> path = ParseExpertGemmPath(absl::GetFlag(FLAGS_gpu_expert_path));
    if (!path.ok()) {
      std::fprintf(stderr, "expert-svc: --gpu_expert_path: %s\n", std::string(path.status().message()).c_str());
      return 2;
    }
    backend = MakeCudaExpertBackend(device->index, absl::GetFlag(FLAGS_gpu_expert_format) == "f32",
                                    config->n_routed_experts, *path);
  }
#endif
  WeightSetStore store(std::move(store_options), std::move(backend));
  store.set_observer(WeightSetObserver{
      .on_ready = [&](const std::string& name, uint64_t version, uint64_t bytes) {
        blend_metrics.SetWeightSet(name, bytes, version);
        metrics.resources().SetWeightResidentBytes(device_label, store.List().resident_bytes);
      },
      .on_gone = [&](const std::string& name) {
        blend_metrics.ClearWeightSet(name);
        metrics.resources().SetWeightResidentBytes(device_label, store.List().resident_bytes);
      },
      .on_build = [&](const std::string& name, bool success, double seconds) {
        blend_metrics.RecordSwap(name, success, seconds);
      },
  });
  std::unique_ptr<rpc::AdminTokenVerifier> admin_verifier = rpc::AdminTokenVerifier::Disabled("expert-svc");
  if (const std::string token_file = absl::GetFlag(FLAGS_admin_token_file); !token_file.empty()) {
    absl::StatusOr<std::unique_ptr<rpc::AdminTokenVerifier>> verifier =
        rpc::AdminTokenVerifier::FromFile(token_file, absl::StrCat("expert-svc ", shard_name));
    if (!verifier.ok()) {
      std::fprintf(stderr, "expert-svc: --admin-token-file: %s\n", std::string(verifier.status().message()).c_str());
      return 2;
    }
    admin_verifier = *std::move(verifier);
  }

  ShardModelInfo info;
  info.model_type = config->model_type;
  info.hidden_size = config->hidden_size;
  info.num_routed_experts = config->n_routed_experts;
  info.weight_dtype = WeightDtypeName(**checkpoint, hosted);
  info.backend = store.backend_name();
  info.max_tokens_per_request = absl::GetFlag(FLAGS_max_tokens_per_request);
  info.max_activation_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_max_message_mb)) << 20;
  info.weight_set_name = absl::GetFlag(FLAGS_weight_set);
  if (info.weight_set_name.empty()) {
    info.weight_set_name = std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (info.weight_set_name.empty()) info.weight_set_name = std::filesystem::path(model_dir).parent_path().filename().string();
  }
  if (device->is_cuda && absl::GetFlag(FLAGS_gpu_direct_load)) {
#if defined(EXPERTMESH_HAS_CUDA)
    // Only this shard's experts, from the mapped file straight into the card's memory.
    GpuExpertsOptions gpu_options;
    gpu_options.device = device->index;
    gpu_options.format = absl::GetFlag(FLAGS_gpu_expert_format);
    gpu_options.gemm_path = *ParseExpertGemmPath(absl::GetFlag(FLAGS_gpu_expert_path));  // checked above
    gpu_options.fp8_activations = absl::GetFlag(FLAGS_gpu_fp8_activations);
    gpu_options.expert_filter = [&hosted](int64_t layer, int32_t expert) {
      auto entry = hosted.find(layer);
      return entry != hosted.end() && entry->second.contains(expert);
    };
    gpu_options.progress = [&](const std::string& line, bool) {
      std::fprintf(stderr, "expert-svc %s: %s\n", shard_name.c_str(), line.c_str());
    };
    absl::StatusOr<GpuExperts> gpu = LoadGpuExperts(**checkpoint, gpu_options);
    if (!gpu.ok()) {
      std::fprintf(stderr, "expert-svc: --device=%s: %s\n", device_label.c_str(), std::string(gpu.status().message()).c_str());
      return 1;
    }
    std::fprintf(stderr, "expert-svc %s: %lld experts on %s (%s)\n", shard_name.c_str(),
                 static_cast<long long>(gpu->expert_count), device_label.c_str(), gpu->description.c_str());
    info.resident_weight_bytes = gpu->resident_weight_bytes;
    if (absl::Status installed = store.InstallPrebuilt(info.weight_set_name, info.weight_set_version,
                                                       std::move(gpu->experts), gpu->resident_weight_bytes);
        !installed.ok()) {
      std::fprintf(stderr, "expert-svc: %s\n", std::string(installed.message()).c_str());
      return 1;
    }
    checkpoint->reset();
#endif
  } else {
    checkpoint->reset();
    // Experts are resident as float32 on the host (and uploaded by a GPU backend; metrics follow
    // through the store's observer).
    absl::StatusOr<WeightSetStatus> loaded =
        store.LoadParent(info.weight_set_name, model_dir, info.weight_set_version, /*commit=*/true);
    if (!loaded.ok()) {
      std::fprintf(stderr, "expert-svc: %s\n", std::string(loaded.status().message()).c_str());
      return 1;
    }
    info.resident_weight_bytes = loaded->referenced_bytes;
  }
  (void)store.SetDefault(info.weight_set_name);
  int64_t expert_count = 0;
  for (const auto& [layer, experts] : hosted) expert_count += static_cast<int64_t>(experts.size());
  ExpertShard shard(shard_name, info, hosted, &store);
  ExpertAdminServiceImpl admin(&store, admin_verifier.get());
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
      rpc::ServerRunner::Start(server_options, {&service, &admin}, v1::ExpertService::service_full_name());
  if (!runner.ok()) {
    std::fprintf(stderr, "expert-svc: %s\n", std::string(runner.status().message()).c_str());
    return 1;
  }
  std::fprintf(stderr,
               "expert-svc %s: serving %lld experts over %zu MoE layers (%.1f MB on %s, weight set '%s') on port %d\n",
               shard_name.c_str(), static_cast<long long>(expert_count), hosted.size(),
               static_cast<double>(info.resident_weight_bytes) / 1e6, device_label.c_str(), info.weight_set_name.c_str(),
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
  expertmesh::rpc::ParseDashedCommandLine(argc, argv);
  return expertmesh::expert_service::Run();
}
