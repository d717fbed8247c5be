// Child-process management and health polling for integration tests.
#include "tests/integration/service_process.h"

#include <fcntl.h>
#include <spawn.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpc/health/v1/health.grpc.pb.h"

extern char** environ;

namespace expertmesh::testing {

int PickFreePort() {
  const int socket_fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length);
  const int port = ntohs(address.sin_port);
  close(socket_fd);
  return port;
}

std::string BinaryPath(const std::string& name) {
  const char* directory = std::getenv("EXPERTMESH_BINARY_DIR");
  return absl::StrCat(directory ? directory : "build", "/bin/", name);
}

std::string SourcePath(const std::string& relative) {
  const char* directory = std::getenv("EXPERTMESH_SOURCE_DIR");
  return absl::StrCat(directory ? directory : ".", "/", relative);
}

absl::StatusOr<std::unique_ptr<ServiceProcess>> ServiceProcess::Start(const std::string& name,
                                                                      const std::string& binary,
                                                                      std::vector<std::string> arguments,
                                                                      std::chrono::seconds timeout, int port) {
  auto process = std::unique_ptr<ServiceProcess>(new ServiceProcess());
  process->name_ = name;
  process->port_ = port > 0 ? port : PickFreePort();
  const char* binary_directory = std::getenv("EXPERTMESH_BINARY_DIR");
  process->log_path_ = absl::StrCat(binary_directory ? binary_directory : "/tmp", "/test-logs-", name, "-",
                                    process->port_, ".log");
  arguments.insert(arguments.begin(), binary);
  arguments.push_back(absl::StrCat("--listen=127.0.0.1:", process->port_));
  // posix_spawn, not fork: gRPC's fork handlers would reset this process's pollers (connections
  // then stall for seconds), and spawn runs no atfork handlers.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, process->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return absl::InternalError(absl::StrCat("cannot start ", binary, ": ", std::strerror(spawned)));
  process->pid_ = pid;

  // Short reconnect backoff: the port opens a moment after the process starts.
  grpc::ChannelArguments channel_arguments;
  channel_arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  channel_arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  auto channel = grpc::CreateCustomChannel(process->address(), grpc::InsecureChannelCredentials(), channel_arguments);
  auto health = grpc::health::v1::Health::NewStub(channel);
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < give_up) {
    if (!process->running()) {
      return absl::InternalError(absl::StrCat(name, " exited during start-up: ", process->ReadLog()));
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
    // Wait for the connection rather than failing fast: with gRPC 1.51, RPCs failing fast while
    // the channel is in TRANSIENT_FAILURE keep its connection attempts from completing (~5 s).
    context.set_wait_for_ready(true);
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    if (health->Check(&context, request, &response).ok() &&
        response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return process;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError(absl::StrCat(name, " not serving after ", timeout.count(), " s: ", process->ReadLog()));
}

ServiceProcess::~ServiceProcess() {
  if (pid_ > 0 && running()) Terminate(std::chrono::seconds(5));
}

std::string ServiceProcess::ReadLog() const {
  std::ifstream file(log_path_);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

bool ServiceProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int ServiceProcess::Terminate(std::chrono::seconds grace) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  const auto give_up = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < give_up) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Kill();
  return -1;
}

void ServiceProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

}  // namespace expertmesh::testing
