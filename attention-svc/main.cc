// attention-svc: loads everything but the routed experts, connects to the expert shards (which
// must together host every expert of every MoE layer) and serves AttentionService with
// continuous batching, health and reflection; SIGTERM stops admitting and drains. Health is
// NOT_SERVING while some expert shard group has no healthy replica.
//   attention-svc --model DIR --expert-shards host:port,...|dns:NAME:PORT|@FILE [--listen ADDR]
//                 [--device cpu|cuda:N]
// With --device cuda:N the non-expert part (embeddings, MLA with a paged latent cache, norms,
// gating, shared experts, LM head) runs on that GPU; the routed experts stay behind the fan-out.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attention-svc/attention_service.h"
#include "attention-svc/batch_scheduler.h"
#include "attention-svc/expert_fanout.h"
#include "attention-svc/model_metadata.h"
#include "engine/format/checkpoint.h"
#include "engine/metrics/moe_metrics.h"
#include "engine/metrics/service_metrics.h"
#include "engine/metrics/serving_metrics.h"
#include "engine/model/weight_loader.h"
#include "engine/ops/cuda/compute_device.h"
#include "engine/rpc/command_line.h"
#include "engine/rpc/server_runner.h"
#if defined(EXPERTMESH_HAS_CUDA)
#include "attention-svc/gpu_step_model.h"
#include "engine/ops/cuda/cuda_device.h"
#endif

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors)");
ABSL_FLAG(std::string, expert_shards, "",
          "expert shards: \"host:port,...\", \"dns:NAME:PORT\" (every address of NAME) or \"@FILE\"");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "listening address");
ABSL_FLAG(int, max_running_sequences, 64, "sequences stepping together");
ABSL_FLAG(int, max_waiting_sequences, 256, "sequences queued for a batch slot (RESOURCE_EXHAUSTED beyond)");
ABSL_FLAG(int, max_prefill_tokens_per_step, 2048, "prompt tokens joining the batch per step");
ABSL_FLAG(int, max_prompt_tokens, 0, "longest prompt accepted (0: max_position_embeddings)");
ABSL_FLAG(int, micro_batches, 1,
          "2 splits each step in two micro-batches so one's expert round trip overlaps the other's attention "
          "(pays off only when the shards run on other hardware; see bench/RESULTS.md)");
ABSL_FLAG(std::string, wire_dtype, "f32", "activation encoding to the expert shards: f32 or bf16");
ABSL_FLAG(int, connect_timeout_ms, 30000, "how long start-up waits for every expert shard");
ABSL_FLAG(int, step_timeout_ms, 30000, "upper bound of one step's expert round trips");
ABSL_FLAG(int, drain_seconds, 30, "grace period for running sequences on SIGTERM");
ABSL_FLAG(std::string, device, "cpu", "where attention runs: cpu, or cuda:N (cuda = cuda:0; needs a CUDA build)");
ABSL_FLAG(std::string, gpu_precision, "bf16", "GPU weights: bf16 (serving) or f32 (fidelity checks)");
ABSL_FLAG(int, gpu_skinny_linear_rows, 0,
          "GPU: steps of at most this many tokens run bf16 linear layers on the skinny tensor-core kernels "
          "instead of cuBLAS (0: cuBLAS always, the measured faster choice on an H100)");
ABSL_FLAG(bool, gpu_split_decode_attention, true,
          "GPU: decode attention of few sequences split over blocks along the cached positions");
ABSL_FLAG(int, gpu_max_sequence_length, 4096,
          "positions per sequence in the GPU's paged latent cache (reserved for max_running_sequences up front); "
          "also the longest prompt + max_tokens served");

namespace expertmesh::attention_service {
namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "attention-svc: %s\n", message.c_str());
  return 1;
}

int Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) return Fail("--model is required");
  if (absl::GetFlag(FLAGS_expert_shards).empty()) return Fail("--expert-shards is required");
  const int micro_batches = absl::GetFlag(FLAGS_micro_batches);
  if (micro_batches != 1 && micro_batches != 2) return Fail("--micro-batches must be 1 or 2");
  absl::StatusOr<ComputeDevice> device = ParseComputeDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(std::string(device.status().message()));
  const std::string gpu_precision = absl::GetFlag(FLAGS_gpu_precision);
  if (gpu_precision != "bf16" && gpu_precision != "f32") return Fail("--gpu-precision must be bf16 or f32");
  if (device->is_cuda) {
    if (!kBuiltWithCuda) return Fail(std::string(CudaNotBuiltError(*device).message()));
#if defined(EXPERTMESH_HAS_CUDA)
    if (absl::Status usable = cuda::UseDevice(device->index); !usable.ok()) {
      return Fail(absl::StrCat("--device=", device->ToString(), ": ", usable.message()));
    }
#endif
    if (absl::GetFlag(FLAGS_gpu_max_sequence_length) < 2) return Fail("--gpu-max-sequence-length must be >= 2");
  }
  // Metrics first, so a wrong --metrics-listen fails at once and weight loading is observable.
  metrics::ServiceMetrics metrics("attention");
  if (absl::Status serving = metrics.Serve(metrics::MetricsListenFlag()); !serving.ok()) {
    return Fail(absl::StrCat("--metrics-listen: ", serving.message()));
  }
  if (metrics.server()) std::fprintf(stderr, "attention-svc: metrics at %s\n", metrics.server()->url().c_str());
  (void)metrics.SampleDeviceMemory("cpu", [] { return metrics::ReadHostMemory(); });
  metrics::ServingMetrics serving_metrics(metrics.registry());
  FanoutOptions fanout_options;
  const std::string wire_dtype = absl::GetFlag(FLAGS_wire_dtype);
  if (wire_dtype == "f32") {
    fanout_options.wire_dtype = v1::TENSOR_DTYPE_F32;
  } else if (wire_dtype == "bf16") {
    fanout_options.wire_dtype = v1::TENSOR_DTYPE_BF16;
  } else {
    return Fail("--wire-dtype must be f32 or bf16");
  }
  fanout_options.connect_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_connect_timeout_ms));
  fanout_options.layer_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_step_timeout_ms));

  // Everything but the routed experts.
  LoadOptions load_options;
  load_options.load_non_expert_weights = true;
  load_options.load_routed_experts = false;
  auto last_report = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  load_options.progress = [&](const LoadProgress& progress) {
    const auto now = std::chrono::steady_clock::now();
    if (progress.tensors_loaded == progress.tensors_total || now - last_report > std::chrono::seconds(1)) {
      last_report = now;
      std::fprintf(stderr, "attention-svc: %s\n", progress.ToString().c_str());
    }
  };
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
      Checkpoint::Open(model_dir, CheckpointNameFilter(load_options));
  if (!checkpoint.ok()) return Fail(std::string(checkpoint.status().message()));
  const ModelConfig config = (*checkpoint)->config();
  absl::StatusOr<LoadedWeights> loaded = LoadWeights(**checkpoint, load_options);
  if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
  checkpoint->reset();
  absl::StatusOr<std::vector<int32_t>> eos = ReadEosTokenIds(model_dir);
  if (!eos.ok()) return Fail(std::string(eos.status().message()));

  absl::StatusOr<std::vector<std::string>> addresses = ResolveShardAddresses(absl::GetFlag(FLAGS_expert_shards));
  if (!addresses.ok()) return Fail(std::string(addresses.status().message()));
  std::fprintf(stderr, "attention-svc: connecting to %zu expert shard(s): %s\n", addresses->size(),
               absl::StrJoin(*addresses, ", ").c_str());
  metrics::MoeFanoutMetrics fanout_metrics(metrics.registry(), static_cast<int>(addresses->size()));
  fanout_options.metrics = &fanout_metrics;
  absl::StatusOr<std::unique_ptr<ExpertFanout>> fanout = ExpertFanout::Create(config, *addresses, fanout_options);
  if (!fanout.ok()) return Fail(std::string(fanout.status().message()));

  uint64_t resident_bytes = loaded->weights.ByteSize();
  // The model the scheduler steps: the CPU engine, or the GPU model (weights uploaded, host copies freed).
  ModelConfig service_config = config;  // what clients are told and checked against
  std::unique_ptr<DeepseekModel> cpu_model;
  std::unique_ptr<StepModel> gpu_model;
  if (!device->is_cuda) {
    ModelOptions model_options;
    model_options.micro_batches = micro_batches;
    absl::StatusOr<std::unique_ptr<DeepseekModel>> model =
        DeepseekModel::Create(config, std::move(loaded->weights), fanout->get(), model_options);
    if (!model.ok()) return Fail(std::string(model.status().message()));
    cpu_model = *std::move(model);
  } else {
#if defined(EXPERTMESH_HAS_CUDA)
    const int64_t max_length = std::min<int64_t>(config.max_position_embeddings,
                                                 absl::GetFlag(FLAGS_gpu_max_sequence_length));
    service_config.max_position_embeddings = max_length;
    GpuStepModelOptions gpu_options;
    gpu_options.device = device->index;
    gpu_options.float32 = gpu_precision == "f32";
    gpu_options.max_sequences = absl::GetFlag(FLAGS_max_running_sequences);
    gpu_options.max_sequence_length = max_length;
    gpu_options.skinny_linear_rows = std::max(absl::GetFlag(FLAGS_gpu_skinny_linear_rows), 0);
    gpu_options.split_decode_attention = absl::GetFlag(FLAGS_gpu_split_decode_attention);
    // A step holds the admitted prompts (a longer one is admitted alone) and a token per running sequence.
    gpu_options.max_step_tokens = std::max<int64_t>(absl::GetFlag(FLAGS_max_prefill_tokens_per_step), max_length) +
                                  absl::GetFlag(FLAGS_max_running_sequences);
    absl::StatusOr<GpuStepModel> model = MakeGpuStepModel(config, loaded->weights, fanout->get(), gpu_options);
    if (!model.ok()) return Fail(absl::StrCat("--device=", device->ToString(), ": ", model.status().message()));
    gpu_model = std::move(model->model);
    resident_bytes = model->weight_bytes;
    loaded->weights = ModelWeights();  // the host copies are no longer needed
    std::fprintf(stderr, "attention-svc: on %s: %.1f MB of weights (%s) + %.1f MB of KV cache for %d sequences of "
                 "%lld positions\n", model->device_name.c_str(), model->weight_bytes / 1e6, gpu_precision.c_str(),
                 model->cache_bytes / 1e6, absl::GetFlag(FLAGS_max_running_sequences),
                 static_cast<long long>(max_length));
    (void)metrics.SampleDeviceMemory(device->ToString(), [index = device->index]() -> absl::StatusOr<metrics::DeviceMemory> {
      metrics::DeviceMemory memory;
      if (absl::Status status = cuda::DeviceMemoryInUse(index, &memory.used_bytes, &memory.total_bytes); !status.ok()) {
        return status;
      }
      return memory;
    });
#endif
  }
  metrics.resources().SetWeightResidentBytes(device->ToString(), resident_bytes);

  SchedulerOptions scheduler_options;
  scheduler_options.max_running_sequences = absl::GetFlag(FLAGS_max_running_sequences);
  scheduler_options.max_waiting_sequences = absl::GetFlag(FLAGS_max_waiting_sequences);
  scheduler_options.max_prefill_tokens_per_step = absl::GetFlag(FLAGS_max_prefill_tokens_per_step);
  scheduler_options.micro_batches = micro_batches;
  scheduler_options.step_timeout = fanout_options.layer_timeout;
  scheduler_options.metrics = &serving_metrics;
  std::unique_ptr<BatchScheduler> scheduler_owner =
      cpu_model ? std::make_unique<BatchScheduler>(*cpu_model, scheduler_options)
                : std::make_unique<BatchScheduler>(*gpu_model, scheduler_options);
  BatchScheduler& scheduler = *scheduler_owner;

  AttentionServiceOptions service_options;
  service_options.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  service_options.eos_token_ids = *eos;
  service_options.resident_weight_bytes = resident_bytes;
  AttentionServiceImpl service(service_config, &scheduler, fanout->get(), service_options);

  rpc::ServerOptions server_options;
  server_options.listen_address = absl::GetFlag(FLAGS_listen);
  server_options.drain_grace = std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds));
  server_options.configure_builder = [&metrics](grpc::ServerBuilder& builder) {
    return metrics.InstallGrpcMetrics(builder, {v1::AttentionService::service_full_name()});
  };
  absl::StatusOr<std::unique_ptr<rpc::ServerRunner>> runner =
      rpc::ServerRunner::Start(server_options, {&service}, v1::AttentionService::service_full_name());
  if (!runner.ok()) return Fail(std::string(runner.status().message()));
  std::fprintf(stderr,
               "attention-svc: serving %s (%lld layers, %.1f MB resident on %s) with %d expert shard replica(s), "
               "weight set '%s', micro-batches %d, on port %d\n",
               config.model_type.c_str(), static_cast<long long>(config.num_hidden_layers),
               static_cast<double>(resident_bytes) / 1e6, device->ToString().c_str(), (*fanout)->num_replicas(),
               (*fanout)->default_weight_set().name().c_str(), micro_batches, (*runner)->port());
  // Readiness follows the expert tier: NOT_SERVING while some shard group has no healthy
  // replica, so a router sends new work to other attention replicas meanwhile.
  std::atomic<bool> draining{false};
  std::thread readiness([&] {
    bool serving = true;
    while (!draining) {
      const int unreachable = (*fanout)->num_unreachable_groups();
      if ((unreachable == 0) != serving) {
        serving = unreachable == 0;
        (*runner)->SetServing(serving);
        std::fprintf(stderr, "attention-svc: %s\n",
                     serving ? "every expert shard group is reachable again: SERVING"
                             : "an expert shard group has no healthy replica: NOT_SERVING");
      }
      for (int i = 0; i < 10 && !draining; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  (*runner)->WaitForTerminationSignal([&] {
    draining = true;
    readiness.join();
    scheduler.StopAdmitting();
  });
  std::fprintf(stderr, "attention-svc: stopped after %llu steps\n",
               static_cast<unsigned long long>(scheduler.steps()));
  return 0;
}

}  // namespace
}  // namespace expertmesh::attention_service

int main(int argc, char** argv) {
  expertmesh::rpc::BlockTerminationSignals();
  absl::SetProgramUsageMessage(
      "attention-svc --model DIR --expert-shards host:port,...|dns:NAME:PORT|@FILE [--listen ADDR]");
  expertmesh::rpc::ParseDashedCommandLine(argc, argv);
  return expertmesh::attention_service::Run();
}
