// Target policy: the load tester only talks to loopback (127.0.0.0/8, ::1, localhost, unix
// sockets) unless the user passes --allow-remote, or names the host in --allow-hosts (the
// addresses of network-namespace test hosts). Parses gRPC target forms: host:port, [v6]:port,
// dns:///host:port, ipv4:/ipv6: prefixes, unix:path, unix-abstract:name.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace expertmesh::loadtest {

// The host part of a gRPC target ("" for unix sockets); INVALID_ARGUMENT when malformed.
absl::StatusOr<std::string> TargetHost(std::string_view target);
bool IsLoopbackHost(std::string_view host);
// OK when the target may be load-tested; PERMISSION_DENIED with the way out otherwise.
absl::Status CheckTargetAllowed(std::string_view target, bool allow_remote, const std::vector<std::string>& allowed_hosts);

}  // namespace expertmesh::loadtest
