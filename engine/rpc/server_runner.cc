// Server construction with health, reflection and signal-driven graceful shutdown.
#include "engine/rpc/server_runner.h"

#include <csignal>
#include <cstdio>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"

namespace expertmesh::rpc {

absl::StatusOr<std::unique_ptr<ServerRunner>> ServerRunner::Start(const ServerOptions& options,
                                                                   std::vector<grpc::Service*> services,
                                                                   std::string service_name_for_health) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto runner = std::unique_ptr<ServerRunner>(new ServerRunner());
  runner->options_ = options;
  runner->health_service_name_ = std::move(service_name_for_health);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &runner->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  for (grpc::Service* service : services) builder.RegisterService(service);
  if (options.configure_builder) {
    if (absl::Status configured = options.configure_builder(builder); !configured.ok()) return configured;
  }
  runner->server_ = builder.BuildAndStart();
  if (!runner->server_ || runner->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  runner->SetServing(true);
  return runner;
}

void ServerRunner::SetServing(bool serving) {
  if (!server_) return;
  if (auto* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(serving);
    health->SetServingStatus(health_service_name_, serving);
  }
}

ServerRunner::~ServerRunner() { Shutdown(); }

void ServerRunner::Shutdown() {
  if (shut_down_ || !server_) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + options_.drain_grace);
  server_->Wait();
}

void ServerRunner::WaitForTerminationSignal(const std::function<void()>& on_signal) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int received = 0;
  sigwait(&signals, &received);
  std::fprintf(stderr, "received %s: draining in-flight work\n", received == SIGTERM ? "SIGTERM" : "SIGINT");
  SetServing(false);
  if (on_signal) on_signal();
  Shutdown();
}

// Services call this first thing in main(), before any thread starts, so that every thread
// inherits the blocked mask and sigwait() above is the only receiver.
void BlockTerminationSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

}  // namespace expertmesh::rpc
