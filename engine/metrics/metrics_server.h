// MetricsServer: serves the Prometheus text exposition of some collectables (registries, the
// process collector) at http://<address>/metrics on its own port, from one thread it owns (a poll
// loop: at most kMaxConnections clients at once, each with a deadline). Bind failures (address in
// use, unresolvable host) are an absl::Status naming the address and the reason.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <prometheus/collectable.h>

#include "absl/status/statusor.h"
#include "engine/metrics/listen_address.h"

namespace expertmesh::metrics {

class MetricsServer {
 public:
  static constexpr size_t kMaxConnections = 32;
  // A client gets this long from connecting to sending its request head and reading the answer.
  static constexpr std::chrono::seconds kConnectionDeadline{10};

  // Listens on `listen_address` (ParseListenAddress's forms; port 0 picks a free port) and serves
  // `collectables`, which the server keeps alive.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      std::string_view listen_address, std::vector<std::shared_ptr<prometheus::Collectable>> collectables);
  ~MetricsServer();  // stops the thread and closes every socket at once

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port and the scrape URL (host as given, or 127.0.0.1 for wildcards).
  int port() const { return port_; }
  std::string url() const;
  // Scrapes answered with 200 since Start.
  uint64_t scrapes_served() const { return scrapes_served_.load(); }

 private:
  MetricsServer() = default;
  void Serve();
  std::string Exposition() const;

  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  ListenAddress address_;
  int port_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: the destructor's "stop now"
  std::atomic<uint64_t> scrapes_served_{0};
  std::thread thread_;
};

}  // namespace expertmesh::metrics
