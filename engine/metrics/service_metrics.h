// ServiceMetrics: everything one service process exports, in one place: the registry the typed
// groups (ServingMetrics, MoeFanoutMetrics, ExpertLoadMetrics, BlendMetrics) register into, the
// process collector, ResourceMetrics and service info, the gRPC server interceptor, and the
// /metrics HTTP endpoint (--metrics-listen). Owns all of them; create one per process.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/server_builder.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "engine/metrics/device_memory_sampler.h"
#include "engine/metrics/grpc_server_metrics.h"
#include "engine/metrics/metrics_server.h"
#include "engine/metrics/process_collector.h"
#include "engine/metrics/resource_metrics.h"

namespace expertmesh::metrics {

// The build's version string (the service_info label).
std::string_view BuildVersion();
// The value of --metrics-listen (defined by this library; "" = no endpoint).
std::string MetricsListenFlag();

class ServiceMetrics {
 public:
  // `service`: "router", "attention" or "expert".
  explicit ServiceMetrics(std::string_view service);
  ~ServiceMetrics();

  prometheus::Registry& registry() { return *registry_; }
  ResourceMetrics& resources() { return resources_; }

  // Creates the gRPC server metrics for `service_full_names` (e.g. "expertmesh.v1.RouterService")
  // and installs their interceptor on `builder` (replacing earlier interceptor creators).
  absl::Status InstallGrpcMetrics(grpc::ServerBuilder& builder, const std::vector<std::string>& service_full_names);
  // Null until InstallGrpcMetrics succeeded.
  GrpcServerMetrics* grpc() { return grpc_.get(); }

  // Keeps `device`'s memory gauges current from `probe` (sampled now and every 2 s by a thread this
  // object owns): ReadHostMemory for "cpu", a cudaMemGetInfo probe for "cuda:N". The probe's
  // first error is returned (the device stays registered).
  absl::Status SampleDeviceMemory(std::string_view device, DeviceMemoryProbe probe);

  // Serves /metrics on `listen_address`; "" serves nothing (metrics are still recorded).
  // UNAVAILABLE / INVALID_ARGUMENT naming the address and the reason when it cannot listen.
  absl::Status Serve(std::string_view listen_address);
  // Null when not serving.
  const MetricsServer* server() const { return server_.get(); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ProcessCollector> process_;
  ResourceMetrics resources_;
  std::unique_ptr<DeviceMemorySampler> device_memory_;  // after resources_: stops before it
  std::unique_ptr<GrpcServerMetrics> grpc_;
  std::unique_ptr<MetricsServer> server_;
};

}  // namespace expertmesh::metrics
