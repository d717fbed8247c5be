// HttpGet over a raw socket; strict parsing of the text exposition format.
#include "tests/unit/metrics/exposition_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace expertmesh::metrics::testing {

absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path) {
  absl::StatusOr<std::string> exchanged =
      RawExchange(port, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
  if (!exchanged.ok()) return exchanged.status();
  const std::string& raw = *exchanged;
  size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos) return absl::DataLossError("no HTTP header end in: " + raw.substr(0, 200));
  HttpResponse response;
  response.headers = raw.substr(0, header_end);
  response.body = raw.substr(header_end + 4);
  std::vector<std::string> status_line = absl::StrSplit(response.headers.substr(0, response.headers.find("\r\n")), ' ');
  if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &response.status)) {
    return absl::DataLossError("bad status line");
  }
  if (response.headers.find("Transfer-Encoding: chunked") != std::string::npos) {
    std::string body;
    size_t at = 0;
    while (true) {
      size_t line_end = response.body.find("\r\n", at);
      if (line_end == std::string::npos) return absl::DataLossError("bad chunk");
      size_t size = std::strtoul(response.body.substr(at, line_end - at).c_str(), nullptr, 16);
      if (size == 0) break;
      body += response.body.substr(line_end + 2, size);
      at = line_end + 2 + size + 2;
    }
    response.body = body;
  }
  return response;
}

int ConnectLoopback(int port, int family) {
  sockaddr_storage address{};
  socklen_t length = 0;
  if (family == AF_INET6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    v6->sin6_addr = in6addr_loopback;
    length = sizeof *v6;
  } else {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    length = sizeof *v4;
  }
  int fd = socket(family, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

absl::StatusOr<std::string> ReadUntilClose(int fd) {
  std::string raw;
  char buffer[8192];
  ssize_t got;
  while ((got = recv(fd, buffer, sizeof buffer, 0)) > 0) raw.append(buffer, static_cast<size_t>(got));
  if (got < 0) return absl::DeadlineExceededError(absl::StrCat("no close from the server; got: ", raw.substr(0, 200)));
  return raw;
}

absl::StatusOr<std::string> RawExchange(int port, const std::string& request, int family) {
  const int fd = ConnectLoopback(port, family);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("connect to loopback port ", port, " failed"));
  if (!request.empty() && send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("send failed");
  }
  absl::StatusOr<std::string> raw = ReadUntilClose(fd);
  close(fd);
  return raw;
}

std::optional<double> Exposition::Value(const std::string& key) const {
  auto found = samples.find(key);
  if (found == samples.end()) return std::nullopt;
  return found->second;
}

std::string SeriesKey(const std::string& name, std::map<std::string, std::string> labels) {
  std::string key = name;
  if (labels.empty()) return key;
  key += "{";
  bool first = true;
  for (const auto& [label, value] : labels) {
    absl::StrAppend(&key, first ? "" : ",", label, "=\"", value, "\"");
    first = false;
  }
  return key + "}";
}

absl::StatusOr<Exposition> ParseExposition(const std::string& text) {
  Exposition exposition;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line.substr(0, 7) == "# TYPE ") {
      std::vector<std::string> parts = absl::StrSplit(line.substr(7), ' ');
      if (parts.size() != 2) return absl::DataLossError(absl::StrCat("bad TYPE line: ", line));
      exposition.types[parts[0]] = parts[1];
      continue;
    }
    if (line[0] == '#') continue;
    size_t brace = line.find('{');
    size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) return absl::DataLossError(absl::StrCat("bad sample: ", line));
    std::string name(line.substr(0, brace == absl::string_view::npos ? space : brace));
    std::map<std::string, std::string> labels;
    if (brace != absl::string_view::npos) {
      size_t close = line.rfind('}');
      if (close == absl::string_view::npos || close < brace) return absl::DataLossError(absl::StrCat("bad labels: ", line));
      absl::string_view inside = line.substr(brace + 1, close - brace - 1);
      // Label values here never contain '"' or ','.
      for (absl::string_view pair : absl::StrSplit(inside, ',', absl::SkipEmpty())) {
        size_t equals = pair.find('=');
        if (equals == absl::string_view::npos || pair.size() < equals + 3 || pair[equals + 1] != '"' ||
            pair.back() != '"') {
          return absl::DataLossError(absl::StrCat("bad label pair in: ", line));
        }
        labels[std::string(pair.substr(0, equals))] = std::string(pair.substr(equals + 2, pair.size() - equals - 3));
      }
    }
    std::string value_text(line.substr(space + 1));
    double value = 0;
    if (value_text == "+Inf") {
      value = INFINITY;
    } else if (!absl::SimpleAtod(value_text, &value)) {
      return absl::DataLossError(absl::StrCat("bad value in: ", line));
    }
    exposition.samples[SeriesKey(name, labels)] = value;
  }
  return exposition;
}

}  // namespace expertmesh::metrics::testing
