// router-svc: the public front door. Loads the tokenizer, connects to the attention replicas and
// serves RouterService.Generate with health (overall = alive; "expertmesh.v1.RouterService" =
// ready, i.e. some attention replica is healthy), reflection and a SIGTERM drain; on the same port
// RouterAdminService (live blends, A/B split; bearer token from --admin-token-file).
//   router-svc --tokenizer models/tokenizer.json --attention 127.0.0.1:50061 --listen 0.0.0.0:50051
//              [--admin-token-file FILE] [--recipes-dir DIR] [--expert-shards ADDRS]
#include <stdlib.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_join.h"
#include "engine/metrics/service_metrics.h"
#include "engine/metrics/serving_metrics.h"
#include "engine/rpc/command_line.h"
#include "engine/rpc/server_runner.h"
#include "engine/tokenizer/tokenizer.h"
#include "router-svc/attention_pool.h"
#include "router-svc/blend_admin.h"
#include "router-svc/blend_selector.h"
#include "router-svc/replica_addresses.h"
#include "router-svc/router_service.h"

ABSL_FLAG(std::string, tokenizer, "", "tokenizer.json of the served model");
ABSL_FLAG(std::string, attention, "", "attention replicas: host:port,... | dns:NAME:PORT | @FILE");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "address to serve on");
ABSL_FLAG(int, max_running, 64, "requests generating at once");
ABSL_FLAG(int, max_waiting, 256, "requests allowed to wait for a slot; beyond that RESOURCE_EXHAUSTED");
ABSL_FLAG(uint32_t, max_tokens_limit, 1024, "largest max_tokens a request may ask for");
ABSL_FLAG(uint32_t, max_prompt_tokens, 0, "longest prompt in tokens; 0 = the model's context length - 1");
ABSL_FLAG(int, startup_wait_seconds, 30, "how long to wait at start for a healthy attention replica");
ABSL_FLAG(int, drain_grace_seconds, 20, "on SIGTERM, how long running requests may take to finish");
ABSL_FLAG(bool, log_requests, true, "log one line per finished request");
ABSL_FLAG(std::string, admin_token_file, "",
          "file holding the admin API's bearer token (a Kubernetes Secret mount), also sent to the expert shards; "
          "without it every admin call is UNAUTHENTICATED");
ABSL_FLAG(std::string, recipes_dir, "", "directory of blend recipe files that CreateBlend may name");
ABSL_FLAG(std::string, expert_shards, "",
          "expert shards for the admin API (host:port,... | dns:NAME:PORT | @FILE); default: the shards the "
          "attention replicas report");

namespace expertmesh::router_service {
namespace {

constexpr char kServiceName[] = "expertmesh.v1.RouterService";

int Run() {
  const std::string tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  if (tokenizer_path.empty()) {
    std::cerr << "error: --tokenizer is required\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_running) < 1 || absl::GetFlag(FLAGS_max_waiting) < 0 ||
      absl::GetFlag(FLAGS_max_tokens_limit) < 1) {
    std::cerr << "error: need --max-running >= 1, --max-waiting >= 0, --max-tokens-limit >= 1\n";
    return 2;
  }
  // Metrics first, so a wrong --metrics-listen fails at once and start-up is observable.
  metrics::ServiceMetrics metrics("router");
  if (absl::Status serving = metrics.Serve(metrics::MetricsListenFlag()); !serving.ok()) {
    std::cerr << "error: --metrics-listen: " << serving.message() << "\n";
    return 2;
  }
  if (metrics.server()) std::fprintf(stderr, "router-svc: metrics at %s\n", metrics.server()->url().c_str());
  (void)metrics.SampleDeviceMemory("cpu", [] { return metrics::ReadHostMemory(); });
  metrics::ServingMetrics serving_metrics(metrics.registry());
  auto tokenizer = Tokenizer::FromFile(tokenizer_path);
  if (!tokenizer.ok()) {
    std::cerr << "error: " << tokenizer.status() << "\n";
    return 2;
  }
  auto addresses = ResolveReplicaAddresses(absl::GetFlag(FLAGS_attention));
  if (!addresses.ok()) {
    std::cerr << "error: --attention: " << addresses.status() << "\n";
    return 2;
  }
  std::fprintf(stderr, "router-svc: attention replicas %s\n", absl::StrJoin(*addresses, ",").c_str());
  auto pool = AttentionPool::Create(*addresses);
  if (!pool->WaitForHealthy(std::chrono::seconds(absl::GetFlag(FLAGS_startup_wait_seconds)))) {
    std::fprintf(stderr, "router-svc: no attention replica is healthy yet; serving anyway (not ready)\n");
  }
  if (auto info = pool->model_info(); info.ok()) {
    std::fprintf(stderr, "router-svc: model %s, vocabulary %u, context %u\n", info->model_type.c_str(),
                 info->vocab_size, info->max_position_embeddings);
  }

  RouterOptions options;
  options.limits.max_tokens_limit = absl::GetFlag(FLAGS_max_tokens_limit);
  options.limits.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  options.max_running = absl::GetFlag(FLAGS_max_running);
  options.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  options.log_requests = absl::GetFlag(FLAGS_log_requests);
  options.metrics = &serving_metrics;
  // Live blends: the catalog picks each request's weight set (explicit, A/B split, default) and the
  // admin API drives the expert shards.
  BlendAdminOptions blend_options;
  blend_options.admin_token_file = absl::GetFlag(FLAGS_admin_token_file);
  blend_options.recipes_dir = absl::GetFlag(FLAGS_recipes_dir);
  blend_options.expert_shards = absl::GetFlag(FLAGS_expert_shards);
  auto blend_admin = BlendAdmin::Create(blend_options, pool.get());
  if (!blend_admin.ok()) {
    std::cerr << "error: " << blend_admin.status() << "\n";
    return 2;
  }
  RouterServiceImpl service(**tokenizer, *pool, (*blend_admin)->selector(), options);

  rpc::ServerOptions server_options;
  server_options.listen_address = absl::GetFlag(FLAGS_listen);
  server_options.drain_grace = std::chrono::seconds(absl::GetFlag(FLAGS_drain_grace_seconds));
  server_options.configure_builder = [&metrics](grpc::ServerBuilder& builder) {
    return metrics.InstallGrpcMetrics(builder, {kServiceName});
  };
  auto runner = rpc::ServerRunner::Start(server_options, {&service, (*blend_admin)->service()}, kServiceName);
  if (!runner.ok()) {
    std::cerr << "error: " << runner.status() << "\n";
    return 1;
  }
  std::fprintf(stderr, "router-svc: listening on port %d (max running %d, waiting %d)\n", (*runner)->port(),
               options.max_running, options.max_waiting);

  // Readiness follows the attention replicas until shutdown begins.
  std::mutex mutex;
  std::condition_variable stop;
  bool stopping = false;
  std::thread readiness([&] {
    std::unique_lock<std::mutex> lock(mutex);
    std::map<std::string, double> metered_split;
    while (!stopping) {
      if (auto* health = (*runner)->server()->GetHealthCheckService()) {
        health->SetServingStatus(kServiceName, pool->num_healthy() > 0);
      }
      // expertmesh_ab_split_weight follows the catalog's split (set, changed or trimmed).
      if (std::map<std::string, double> split = (*blend_admin)->catalog().Snapshot().split; split != metered_split) {
        serving_metrics.SetAbSplit(std::vector<std::pair<std::string, double>>(split.begin(), split.end()));
        metered_split = std::move(split);
      }
      stop.wait_for(lock, std::chrono::milliseconds(250));
    }
  });
  (*runner)->WaitForTerminationSignal([&] {
    service.StopAdmitting();
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
    }
    stop.notify_all();
    readiness.join();
  });
  std::fprintf(stderr, "router-svc: stopped\n");
  return 0;
}

}  // namespace
}  // namespace expertmesh::router_service

int main(int argc, char** argv) {
  // gRPC 1.51 notices a replica connection that completes outside an RPC only at the client
  // channel's backup poll (default 5 s); poll more often so a restarted replica is back quickly.
  // Must happen before gRPC initializes; an explicit setting in the environment wins.
  setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "500", /*overwrite=*/0);
  expertmesh::rpc::BlockTerminationSignals();
  absl::SetProgramUsageMessage(
      "router-svc --tokenizer FILE --attention ADDRS [--listen ADDR] [--max-running N --max-waiting M] "
      "[--max-tokens-limit K] [--max-prompt-tokens P]");
  const std::vector<std::string> positional = expertmesh::rpc::ParseDashedCommandLine(argc, argv);  // --max-running
  if (!positional.empty()) {
    std::cerr << "error: unexpected argument '" << positional[0] << "'\n";
    return 2;
  }
  return expertmesh::router_service::Run();
}
