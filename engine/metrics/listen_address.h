// ListenAddress: the --metrics-listen forms (gRPC-style "HOST:PORT", ":PORT", "PORT", "[V6]:PORT",
// "*:PORT", "localhost:PORT") parsed once, and a listening TCP socket bound to one. Bind failures
// come back as UNAVAILABLE naming the address and the reason (errno text), never an exception.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace expertmesh::metrics {

struct ListenAddress {
  // Empty for the wildcard forms (":PORT", "PORT", "*:PORT", "[::]:PORT"): all interfaces, IPv6
  // and IPv4 where the host has IPv6, else IPv4. "0.0.0.0" is IPv4's wildcard only. IPv6 literals
  // are kept without brackets.
  std::string host;
  int port = 0;  // 0: the kernel picks a free port

  bool wildcard() const { return host.empty(); }
  // How a client on this host reaches it: 127.0.0.1 for the wildcards, [v6] for IPv6 literals.
  std::string ClientHost() const;
};

// INVALID_ARGUMENT naming the address when it is empty, has no port, or the port is out of range.
absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view text);

// A listening, non-blocking, close-on-exec TCP socket (SO_REUSEADDR, backlog 64) and the port it
// got. The caller owns the descriptor.
struct BoundSocket {
  int fd = -1;
  int port = 0;
};
absl::StatusOr<BoundSocket> BindListeningSocket(const ListenAddress& address, std::string_view as_given);

}  // namespace expertmesh::metrics
