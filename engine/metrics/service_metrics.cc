// ServiceMetrics: the per-process bundle and the --metrics-listen flag.
#include "engine/metrics/service_metrics.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, metrics_listen, "",
          "serve Prometheus metrics at http://ADDRESS/metrics (HOST:PORT, :PORT or PORT; port 0 = any free "
          "port; empty = no endpoint)");

#ifndef EXPERTMESH_VERSION
#define EXPERTMESH_VERSION "dev"
#endif

namespace expertmesh::metrics {

std::string_view BuildVersion() { return EXPERTMESH_VERSION; }

std::string MetricsListenFlag() { return absl::GetFlag(FLAGS_metrics_listen); }

ServiceMetrics::ServiceMetrics(std::string_view service)
    : registry_(std::make_shared<prometheus::Registry>()),
      process_(std::make_shared<ProcessCollector>()),
      resources_(*registry_, service, BuildVersion()) {}

ServiceMetrics::~ServiceMetrics() {
  server_.reset();
  device_memory_.reset();
}

absl::Status ServiceMetrics::InstallGrpcMetrics(grpc::ServerBuilder& builder,
                                                const std::vector<std::string>& service_full_names) {
  absl::StatusOr<std::unique_ptr<GrpcServerMetrics>> created = GrpcServerMetrics::Create(*registry_, service_full_names);
  if (!created.ok()) return created.status();
  grpc_ = *std::move(created);
  grpc_->InstallOn(builder);
  return absl::OkStatus();
}

absl::Status ServiceMetrics::SampleDeviceMemory(std::string_view device, DeviceMemoryProbe probe) {
  if (!device_memory_) device_memory_ = std::make_unique<DeviceMemorySampler>(resources_, std::chrono::seconds(2));
  return device_memory_->AddDevice(device, std::move(probe));
}

absl::Status ServiceMetrics::Serve(std::string_view listen_address) {
  if (listen_address.empty()) return absl::OkStatus();
  if (server_) return absl::FailedPreconditionError("metrics endpoint already serving at " + server_->url());
  absl::StatusOr<std::unique_ptr<MetricsServer>> started = MetricsServer::Start(listen_address, {registry_, process_});
  if (!started.ok()) return started.status();
  server_ = *std::move(started);
  return absl::OkStatus();
}

}  // namespace expertmesh::metrics
