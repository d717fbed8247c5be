// Request-head parsing and the responses of the metrics endpoint.
#include "engine/metrics/http_exposition.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace expertmesh::metrics {
namespace {

constexpr absl::string_view kExpositionContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string Response(absl::string_view status, absl::string_view content_type, absl::string_view body,
                     bool include_body, absl::string_view extra_headers = "") {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type, "\r\nContent-Length: ", body.size(),
                      "\r\n", extra_headers, "Connection: close\r\n\r\n", include_body ? body : absl::string_view());
}

}  // namespace

size_t RequestHeadLength(std::string_view received) {
  for (size_t i = 0; i < received.size(); ++i) {
    if (received[i] != '\n') continue;
    if (i + 1 < received.size() && received[i + 1] == '\n') return i + 2;
    if (i + 2 < received.size() && received[i + 1] == '\r' && received[i + 2] == '\n') return i + 3;
  }
  return 0;
}

std::string RespondToRequestHead(std::string_view request_head_view, const std::function<std::string()>& exposition) {
  const absl::string_view request_head(request_head_view.data(), request_head_view.size());
  absl::string_view request_line = request_head.substr(0, request_head.find('\n'));
  if (absl::EndsWith(request_line, "\r")) request_line.remove_suffix(1);
  std::vector<absl::string_view> parts = absl::StrSplit(request_line, ' ');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty() || parts[1][0] != '/' ||
      !absl::StartsWith(parts[2], "HTTP/1.")) {
    return Response("400 Bad Request", "text/plain; charset=utf-8", "malformed HTTP/1.x request line\n", true);
  }
  const absl::string_view method = parts[0];
  absl::string_view path = parts[1];
  path = path.substr(0, path.find('?'));
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    return Response("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET and HEAD are served\n", true,
                    "Allow: GET, HEAD\r\n");
  }
  if (path != "/metrics") {
    return Response("404 Not Found", "text/plain; charset=utf-8", "not found: the metrics are at /metrics\n", !head);
  }
  return Response("200 OK", kExpositionContentType, exposition(), !head);
}

std::string RequestHeadTooLargeResponse() {
  return Response("431 Request Header Fields Too Large", "text/plain; charset=utf-8",
                  absl::StrCat("request head over ", kMaxRequestHeadBytes, " bytes\n"), true);
}

}  // namespace expertmesh::metrics
