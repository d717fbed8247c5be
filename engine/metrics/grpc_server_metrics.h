// GrpcServerMetrics: the standard gRPC server metrics (grpc_server_started_total, _handled_total,
// _handling_seconds, _msg_received_total, _msg_sent_total, _in_flight_requests), recorded by a
// server interceptor installed on a grpc::ServerBuilder. Series exist only for the methods of the
// services named at creation (looked up in the generated protobuf pool) plus grpc.health.v1 and
// server reflection; any other method path is counted as grpc_service="unknown".
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <grpcpp/server_builder.h>
#include <grpcpp/support/server_interceptor.h>
#include <prometheus/registry.h>

#include "absl/status/statusor.h"

namespace expertmesh::metrics {

// grpc_code label values, as grpc-go spells them ("OK", "InvalidArgument", ...).
std::string_view GrpcCodeLabel(grpc::StatusCode code);

class GrpcServerMetrics {
 public:
  // Series of one method; counters are created up front, the per-code ones on first use.
  struct MethodSeries {
    std::string type, service, method;
    prometheus::Counter* started = nullptr;
    prometheus::Counter* messages_received = nullptr;
    prometheus::Counter* messages_sent = nullptr;
    prometheus::Gauge* in_flight = nullptr;
    prometheus::Histogram* handling_seconds = nullptr;
    std::array<std::atomic<prometheus::Counter*>, 17> handled_by_code{};
  };

  // `service_full_names`: e.g. {"expertmesh.v1.RouterService"}; NOT_FOUND if one is not in the
  // generated descriptor pool (its .proto is not linked into this binary).
  static absl::StatusOr<std::unique_ptr<GrpcServerMetrics>> Create(prometheus::Registry& registry,
                                                                    const std::vector<std::string>& service_full_names);

  // A new interceptor factory recording into this object (which must outlive the server).
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewInterceptorFactory();
  // Installs the interceptor on `builder`. Note: SetInterceptorCreators replaces any earlier
  // creators, so a server with more interceptors passes them all in one vector instead.
  void InstallOn(grpc::ServerBuilder& builder);

  // The series for a method path ("/package.Service/Method"); the shared "unknown" series for
  // paths of other services. Never null.
  MethodSeries* Find(std::string_view method_path);
  // Counts a finished call with `code` (creates the code's series on first use).
  void RecordHandled(MethodSeries& series, grpc::StatusCode code);

 private:
  explicit GrpcServerMetrics(prometheus::Registry& registry);
  void AddMethod(const std::string& service, const std::string& method, const std::string& type);

  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
  prometheus::Family<prometheus::Counter>& messages_received_;
  prometheus::Family<prometheus::Counter>& messages_sent_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  // Immutable after Create(): path -> series.
  std::unordered_map<std::string, std::unique_ptr<MethodSeries>> methods_;
  // Created on the first call to a method of no known service.
  std::once_flag unknown_once_;
  std::unique_ptr<MethodSeries> unknown_;
};

}  // namespace expertmesh::metrics
