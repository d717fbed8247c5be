// MetricsServer: serves the Prometheus text exposition of some collectables (registries, the
// process collector) at http://<address>/metrics, on its own port, through prometheus-cpp's
// Exposer (civetweb). Start() turns civetweb's failures (address in use, address forms its
// Debian build cannot parse such as IPv6) into a clear absl::Status instead of an exception.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/collectable.h>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
}

namespace expertmesh::metrics {

// Maps a listen address to civetweb's "listening_ports" syntax: "host:port" and "port" as they
// are; gRPC-style wildcards ":port", "0.0.0.0:port", "[::]:port" and "*:port" to "0.0.0.0:port";
// "localhost:port" to "127.0.0.1:port". Other IPv6 literals are INVALID_ARGUMENT when civetweb
// was built without IPv6 (Debian's is).
absl::StatusOr<std::string> ToCivetwebListeningPort(std::string_view listen_address);

class MetricsServer {
 public:
  // Listens on `listen_address` (port 0 picks a free port) and serves `collectables`, which the
  // server keeps alive.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      std::string_view listen_address, std::vector<std::shared_ptr<prometheus::Collectable>> collectables);
  ~MetricsServer();

  // The bound port and the scrape URL (host as given, or 127.0.0.1 for wildcards).
  int port() const { return port_; }
  std::string url() const;

 private:
  MetricsServer() = default;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string host_;
  int port_ = 0;
};

}  // namespace expertmesh::metrics
