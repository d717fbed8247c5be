// The HTTP/1.x part of the metrics endpoint, without sockets: decide from a request head (the bytes
// up to the blank line) what to answer. GET/HEAD /metrics serve the Prometheus text format; other
// paths are 404, other methods 405, anything unparsable 400, a head over kMaxRequestHeadBytes 431.
// Every answer closes the connection (Prometheus and curl reconnect per scrape).
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace expertmesh::metrics {

inline constexpr size_t kMaxRequestHeadBytes = 8192;

// The length of the request head in `received` including its terminating blank line, or 0 while
// it is incomplete. Accepts CRLF and bare LF line ends.
size_t RequestHeadLength(std::string_view received);

// The full response (status line, headers, body) to `request_head`. `exposition` is called only
// for GET /metrics and HEAD /metrics and returns the text exposition.
std::string RespondToRequestHead(std::string_view request_head, const std::function<std::string()>& exposition);

// The response for a head that grew past kMaxRequestHeadBytes without ending.
std::string RequestHeadTooLargeResponse();

}  // namespace expertmesh::metrics
