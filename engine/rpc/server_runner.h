// ServerRunner: builds and runs a gRPC server the same way for every service: listening address,
// message size limits, standard grpc.health.v1 health and server reflection, and a graceful
// shutdown on SIGTERM/SIGINT: health turns NOT_SERVING, the service's own drain hook runs (e.g.
// stop admitting, finish what is in flight), then the server stops accepting, waits for
// in-flight calls up to a grace period and cancels the rest. Keepalive pings from clients are
// accepted (long-lived streams use them to notice dead peers).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace expertmesh::rpc {

struct ServerOptions {
  std::string listen_address = "127.0.0.1:0";
  int max_message_bytes = 64 << 20;
  std::chrono::milliseconds drain_grace{10000};
  // Called on the builder after the listening port and services are added, right before
  // BuildAndStart (e.g. to install the metrics interceptor); an error aborts Start().
  std::function<absl::Status(grpc::ServerBuilder&)> configure_builder;
};

// Call first in main(), before any thread starts, so WaitForTerminationSignal receives them.
void BlockTerminationSignals();

class ServerRunner {
 public:
  // Starts serving `services` (not owned; they must outlive the runner). The bound port is
  // available through port() (useful with ":0").
  static absl::StatusOr<std::unique_ptr<ServerRunner>> Start(const ServerOptions& options,
                                                              std::vector<grpc::Service*> services,
                                                              std::string service_name_for_health);
  ~ServerRunner();

  int port() const { return port_; }
  // Sets the overall and the named service's health status.
  void SetServing(bool serving);
  // Marks the service NOT_SERVING (readiness fails), waits for in-flight calls up to the drain
  // grace, then shuts the server down.
  void Shutdown();
  // Blocks until SIGTERM or SIGINT arrives, marks the server NOT_SERVING, runs `on_signal` (e.g.
  // to stop admitting new work and let what is in flight finish), then calls Shutdown().
  void WaitForTerminationSignal(const std::function<void()>& on_signal = nullptr);

  grpc::Server* server() { return server_.get(); }

 private:
  ServerRunner() = default;
  std::unique_ptr<grpc::Server> server_;
  ServerOptions options_;
  std::string health_service_name_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace expertmesh::rpc
