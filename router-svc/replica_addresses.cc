// Parsing of replica lists and DNS expansion (getaddrinfo) of "dns:NAME:PORT" entries.
#include "router-svc/replica_addresses.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace expertmesh::router_service {
namespace {

absl::Status CheckPort(const std::string& port, const std::string& entry) {
  int value = 0;
  if (!absl::SimpleAtoi(port, &value) || value <= 0 || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port '", port, "' in attention address '", entry, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ResolveDns(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  if (int error = getaddrinfo(host.c_str(), port.c_str(), &hints, &results); error != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve attention replicas '", host, "': ", gai_strerror(error)));
  }
  std::set<std::string> addresses;  // sorted: every router sees the same order
  for (addrinfo* entry = results; entry; entry = entry->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (entry->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(entry->ai_addr)->sin_addr, text, sizeof(text));
      addresses.insert(absl::StrCat(text, ":", port));
    } else if (entry->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(entry->ai_addr)->sin6_addr, text, sizeof(text));
      addresses.insert(absl::StrCat("[", text, "]:", port));
    }
  }
  freeaddrinfo(results);
  return std::vector<std::string>(addresses.begin(), addresses.end());
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ResolveReplicaAddresses(const std::string& spec) {
  std::vector<std::string> entries;
  if (absl::StartsWith(spec, "@")) {
    const std::string path = spec.substr(1);
    std::ifstream file(path);
    if (!file) return absl::NotFoundError(absl::StrCat("cannot read attention replica list ", path));
    for (std::string line; std::getline(file, line);) {
      line = std::string(absl::StripAsciiWhitespace(line));
      if (!line.empty() && line[0] != '#') entries.push_back(line);
    }
  } else {
    for (absl::string_view entry : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
      const absl::string_view stripped = absl::StripAsciiWhitespace(entry);
      if (!stripped.empty()) entries.emplace_back(stripped);
    }
  }
  std::vector<std::string> addresses;
  for (const std::string& entry : entries) {
    std::vector<std::string> expanded;
    if (absl::StartsWith(entry, "dns:")) {
      const std::string target = entry.substr(4);
      const size_t colon = target.rfind(':');
      if (colon == std::string::npos || colon == 0) {
        return absl::InvalidArgumentError(absl::StrCat("expected dns:NAME:PORT, got '", entry, "'"));
      }
      const std::string port = target.substr(colon + 1);
      if (absl::Status valid = CheckPort(port, entry); !valid.ok()) return valid;
      auto resolved = ResolveDns(target.substr(0, colon), port);
      if (!resolved.ok()) return resolved.status();
      expanded = *std::move(resolved);
    } else {
      const size_t colon = entry.rfind(':');
      if (colon == std::string::npos || colon == 0) {
        return absl::InvalidArgumentError(absl::StrCat("expected host:port, got '", entry, "'"));
      }
      if (absl::Status valid = CheckPort(entry.substr(colon + 1), entry); !valid.ok()) return valid;
      expanded.push_back(entry);
    }
    for (std::string& address : expanded) {
      if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) {
        addresses.push_back(std::move(address));
      }
    }
  }
  if (addresses.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no attention replica addresses in '", spec, "'"));
  }
  return addresses;
}

}  // namespace expertmesh::router_service
