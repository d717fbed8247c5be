// ServiceProcess: starts one of the project's service binaries as a real child process on a
// loopback port, waits until its grpc.health.v1 check reports SERVING, and stops it (SIGTERM for
// a graceful drain, or SIGKILL to simulate a crash). Used by the integration tests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace expertmesh::testing {

// A free TCP port on 127.0.0.1 (bound and released; good enough for tests on one machine).
int PickFreePort();

// Path of a built binary: $EXPERTMESH_BINARY_DIR/bin/<name>.
std::string BinaryPath(const std::string& name);
// Path inside the source tree: $EXPERTMESH_SOURCE_DIR/<relative>.
std::string SourcePath(const std::string& relative);

class ServiceProcess {
 public:
  // Runs `binary` with `arguments` plus --listen=127.0.0.1:<port> (`port` 0: a free one); output
  // goes to <log_dir>/<name>.log. Fails if the process exits or is not SERVING within `timeout`.
  static absl::StatusOr<std::unique_ptr<ServiceProcess>> Start(const std::string& name, const std::string& binary,
                                                               std::vector<std::string> arguments,
                                                               std::chrono::seconds timeout = std::chrono::seconds(60),
                                                               int port = 0);
  ~ServiceProcess();

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string ReadLog() const;

  // SIGTERM, then wait up to `grace` for exit; returns the exit status (or -1 if it had to be killed).
  int Terminate(std::chrono::seconds grace = std::chrono::seconds(20));
  // SIGKILL and reap (a crash).
  void Kill();
  bool running();

 private:
  ServiceProcess() = default;
  std::string name_;
  std::string log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace expertmesh::testing
