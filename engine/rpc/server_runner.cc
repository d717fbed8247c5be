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
  for (grpc::Service* service : services) builder.RegisterService(service);
  runner->server_ = builder.BuildAndStart();
  if (!runner->server_ || runner->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  if (auto* health = runner->server_->GetHealthCheckService()) {
    health->SetServingStatus(true);
    health->SetServingStatus(runner->health_service_name_, true);
  }
  return runner;
}

ServerRunner::~ServerRunner() { Shutdown(); }

void ServerRunner::Shutdown() {
  if (shut_down_ || !server_) return;
  shut_down_ = true;
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(false);
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
