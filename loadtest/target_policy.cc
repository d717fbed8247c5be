// Target parsing and the loopback-only rule.
#include "loadtest/target_policy.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace expertmesh::loadtest {
namespace {

absl::Status Malformed(std::string_view target) {
  return absl::InvalidArgumentError(absl::StrCat("target '", std::string(target),
                                                 "': expected HOST:PORT, [IPV6]:PORT, dns:///HOST:PORT or unix:PATH"));
}

}  // namespace

absl::StatusOr<std::string> TargetHost(std::string_view target_view) {
  std::string target(target_view);
  if (absl::StartsWith(target, "unix:") || absl::StartsWith(target, "unix-abstract:")) {
    if (target.size() <= target.find(':') + 1) return Malformed(target_view);
    return std::string();
  }
  for (const char* prefix : {"dns:///", "dns:", "ipv4:", "ipv6:"}) {
    if (absl::StartsWith(target, prefix)) {
      target = target.substr(std::string_view(prefix).size());
      break;
    }
  }
  if (target.find(',') != std::string::npos) return Malformed(target_view);  // address lists
  std::string host;
  std::string port;
  if (absl::StartsWith(target, "[")) {
    size_t close = target.find(']');
    if (close == std::string::npos || close + 1 >= target.size() || target[close + 1] != ':') return Malformed(target_view);
    host = target.substr(1, close - 1);
    port = target.substr(close + 2);
  } else {
    size_t colon = target.rfind(':');
    if (colon == std::string::npos || target.find(':') != colon) return Malformed(target_view);
    host = target.substr(0, colon);
    port = target.substr(colon + 1);
  }
  int port_number = 0;
  if (host.empty() || !absl::SimpleAtoi(port, &port_number) || port_number <= 0 || port_number > 65535) {
    return Malformed(target_view);
  }
  return host;
}

bool IsLoopbackHost(std::string_view host_view) {
  std::string host(host_view);
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::Status CheckTargetAllowed(std::string_view target, bool allow_remote, const std::vector<std::string>& allowed_hosts) {
  absl::StatusOr<std::string> host = TargetHost(target);
  if (!host.ok()) return host.status();
  if (host->empty() || IsLoopbackHost(*host) || allow_remote) return absl::OkStatus();
  if (std::find(allowed_hosts.begin(), allowed_hosts.end(), *host) != allowed_hosts.end()) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "target '", std::string(target), "' is not a loopback address; the load tester only targets loopback unless run "
      "with --allow-remote, or with --allow-hosts=", *host, " for a network-namespace test host"));
}

}  // namespace expertmesh::loadtest
