// ListenAddress parsing and the bind of the metrics endpoint's listening socket.
#include "engine/metrics/listen_address.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace expertmesh::metrics {
namespace {

absl::Status BindError(std::string_view as_given, std::string_view what, int error) {
  std::string hint;
  if (error == EADDRINUSE) {
    hint = " (another process, another replica on this host, or this process's own gRPC port holds it)";
  }
  return absl::UnavailableError(absl::StrCat("metrics server cannot listen on '", std::string(as_given), "': ",
                                             std::string(what), ": ", std::strerror(error), hint));
}

// Creates, binds and listens; returns the descriptor or the errno of the step that failed.
int BindOne(const sockaddr* address, socklen_t length, bool dual_stack, int* error, const char** step) {
  int fd = socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = errno;
    *step = "socket";
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (address->sa_family == AF_INET6) {
    int v6_only = dual_stack ? 0 : 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6_only, sizeof v6_only);
  }
  if (bind(fd, address, length) != 0) {
    *error = errno;
    *step = "bind";
    close(fd);
    return -1;
  }
  if (listen(fd, 64) != 0) {
    *error = errno;
    *step = "listen";
    close(fd);
    return -1;
  }
  return fd;
}

int PortOf(int fd) {
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) return 0;
  if (bound.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
}

}  // namespace

std::string ListenAddress::ClientHost() const {
  if (wildcard() || host == "0.0.0.0") return "127.0.0.1";
  if (absl::StrContains(host, ':')) return absl::StrCat("[", host, "]");
  return host;
}

absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view text_view) {
  const std::string text(text_view);
  auto invalid = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address '", text, "': expected HOST:PORT, [IPV6]:PORT, :PORT or PORT (PORT 0..65535)"));
  };
  if (text.empty()) return absl::InvalidArgumentError("metrics listen address is empty");
  ListenAddress address;
  std::string port_text = text;
  if (absl::StartsWith(text, "[")) {
    size_t close_bracket = text.find(']');
    if (close_bracket == std::string::npos || close_bracket + 1 >= text.size() || text[close_bracket + 1] != ':') {
      return invalid();
    }
    address.host = text.substr(1, close_bracket - 1);
    port_text = text.substr(close_bracket + 2);
    if (address.host.empty()) return invalid();
    in6_addr parsed{};
    if (inet_pton(AF_INET6, address.host.c_str(), &parsed) != 1) return invalid();
    if (address.host == "::") address.host.clear();
  } else if (size_t colon = text.rfind(':'); colon != std::string::npos) {
    address.host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (absl::StrContains(address.host, ':')) return invalid();  // bare IPv6 needs brackets
    if (address.host == "*") address.host.clear();
    if (address.host == "localhost") address.host = "127.0.0.1";
  }
  int port = -1;
  if (port_text.empty() || !absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) return invalid();
  address.port = port;
  return address;
}

absl::StatusOr<BoundSocket> BindListeningSocket(const ListenAddress& address, std::string_view as_given) {
  int error = 0;
  const char* step = "bind";
  BoundSocket bound;
  if (address.wildcard()) {
    sockaddr_in6 any6{};
    any6.sin6_family = AF_INET6;
    any6.sin6_addr = in6addr_any;
    any6.sin6_port = htons(static_cast<uint16_t>(address.port));
    bound.fd = BindOne(reinterpret_cast<sockaddr*>(&any6), sizeof any6, /*dual_stack=*/true, &error, &step);
    if (bound.fd < 0 && (error == EAFNOSUPPORT || error == EADDRNOTAVAIL)) {  // host without IPv6
      sockaddr_in any4{};
      any4.sin_family = AF_INET;
      any4.sin_addr.s_addr = htonl(INADDR_ANY);
      any4.sin_port = htons(static_cast<uint16_t>(address.port));
      bound.fd = BindOne(reinterpret_cast<sockaddr*>(&any4), sizeof any4, false, &error, &step);
    }
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* results = nullptr;
    const std::string port_text = std::to_string(address.port);
    if (int resolved = getaddrinfo(address.host.c_str(), port_text.c_str(), &hints, &results); resolved != 0) {
      return absl::UnavailableError(absl::StrCat("metrics server cannot listen on '", std::string(as_given), "': cannot resolve '",
                                                 address.host, "': ", gai_strerror(resolved)));
    }
    for (addrinfo* candidate = results; candidate != nullptr && bound.fd < 0; candidate = candidate->ai_next) {
      bound.fd = BindOne(candidate->ai_addr, candidate->ai_addrlen, false, &error, &step);
    }
    freeaddrinfo(results);
  }
  if (bound.fd < 0) return BindError(as_given, step, error);
  bound.port = PortOf(bound.fd);
  return bound;
}

}  // namespace expertmesh::metrics
