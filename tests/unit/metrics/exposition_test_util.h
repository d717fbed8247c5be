// Test helpers for metrics: a minimal HTTP/1.1 GET over a loopback socket (to scrape a real
// MetricsServer) and a parser of the Prometheus text exposition format into samples.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace expertmesh::metrics::testing {

struct HttpResponse {
  int status = 0;
  std::string headers;
  std::string body;
};

// GET http://127.0.0.1:<port><path>; the whole response (Connection: close).
absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path);

// Connects to the loopback address of `family` (AF_INET or AF_INET6) at `port`, sends `request`
// bytes as they are, and returns everything received until the server closes (10 s limit).
absl::StatusOr<std::string> RawExchange(int port, const std::string& request, int family = 2 /* AF_INET */);

// A connected loopback socket of `family` (10 s receive timeout) that the test drives by hand;
// -1 on failure.
int ConnectLoopback(int port, int family = 2 /* AF_INET */);

// Everything `fd` receives until the peer closes; DEADLINE_EXCEEDED when the timeout ends it first.
absl::StatusOr<std::string> ReadUntilClose(int fd);

// Samples by series key: name{label="value",...} with labels sorted by name (as written by
// SeriesKey). TYPE lines are kept in `types` (metric name -> type).
struct Exposition {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::optional<double> Value(const std::string& key) const;
};
absl::StatusOr<Exposition> ParseExposition(const std::string& text);

// name{a="1",b="2"} from pairs, sorted by label name.
std::string SeriesKey(const std::string& name, std::map<std::string, std::string> labels = {});

}  // namespace expertmesh::metrics::testing
