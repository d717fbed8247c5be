// MetricsServer: address normalisation, civetweb error capture, Exposer lifetime.
#include "engine/metrics/metrics_server.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/exposer.h>

#include <cstdio>
#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace expertmesh::metrics {
namespace {

// civetweb reports why mg_start failed only through the log_message callback, on the thread
// that starts the server; Start() points this at its buffer for the duration of the call.
thread_local std::vector<std::string>* g_start_messages = nullptr;

int LogCivetwebMessage(const mg_connection*, const char* message) {
  if (g_start_messages != nullptr) {
    g_start_messages->push_back(message);
  } else {
    std::fprintf(stderr, "metrics server: %s\n", message);
  }
  return 1;  // handled: civetweb writes nothing itself
}

bool CivetwebHasIpv6() { return mg_check_feature(8) != 0; }

}  // namespace

absl::StatusOr<std::string> ToCivetwebListeningPort(std::string_view listen_address_view) {
  const std::string listen_address(listen_address_view);
  if (listen_address.empty()) return absl::InvalidArgumentError("metrics listen address is empty");
  std::string host;
  std::string port_text = listen_address;
  size_t colon = listen_address.rfind(':');
  if (colon != std::string::npos) {
    host = listen_address.substr(0, colon);
    port_text = listen_address.substr(colon + 1);
  }
  int port = -1;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address '", listen_address, "': expected HOST:PORT or PORT (PORT 0..65535)"));
  }
  if (colon == std::string::npos || host.empty() || host == "*" || host == "[::]" || host == "0.0.0.0") {
    return absl::StrCat("0.0.0.0:", port);
  }
  if (host == "localhost") return absl::StrCat("127.0.0.1:", port);
  if (absl::StartsWith(host, "[") || absl::StrContains(host, ':')) {
    if (!CivetwebHasIpv6()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics listen address '", listen_address,
          "': this civetweb build has no IPv6 support; use 127.0.0.1:PORT, 0.0.0.0:PORT or [::]:PORT (served on IPv4)"));
    }
    return listen_address;
  }
  return listen_address;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    std::string_view listen_address_view, std::vector<std::shared_ptr<prometheus::Collectable>> collectables) {
  const std::string listen_address(listen_address_view);
  absl::StatusOr<std::string> civetweb_address = ToCivetwebListeningPort(listen_address);
  if (!civetweb_address.ok()) return civetweb_address.status();
  static const CivetCallbacks* callbacks = [] {
    auto* callbacks = new CivetCallbacks();
    callbacks->log_message = &LogCivetwebMessage;
    return callbacks;
  }();
  auto server = std::unique_ptr<MetricsServer>(new MetricsServer());
  std::vector<std::string> messages;
  g_start_messages = &messages;
  std::string exception_text;
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(*civetweb_address, /*num_threads=*/2, callbacks);
  } catch (const std::exception& error) {
    exception_text = error.what();
  }
  g_start_messages = nullptr;
  if (!server->exposer_) {
    std::string reason = messages.empty() ? exception_text : absl::StrJoin(messages, "; ");
    std::string hint;
    if (absl::StrContains(reason, "in use")) {
      hint = " (another process, another replica on this host, or this process's own gRPC port holds it)";
    }
    return absl::UnavailableError(
        absl::StrCat("metrics server cannot listen on '", listen_address, "': ", reason, hint));
  }
  std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) return absl::InternalError("metrics server started without a listening port");
  server->port_ = ports.front();
  std::string civetweb_host = civetweb_address->substr(0, civetweb_address->rfind(':'));
  server->host_ = (civetweb_host == "0.0.0.0") ? "127.0.0.1" : civetweb_host;
  for (const auto& collectable : collectables) server->exposer_->RegisterCollectable(collectable);
  server->collectables_ = std::move(collectables);
  return server;
}

MetricsServer::~MetricsServer() {
  exposer_.reset();  // stops civetweb before the collectables go
}

std::string MetricsServer::url() const { return absl::StrCat("http://", host_, ":", port_, "/metrics"); }

}  // namespace expertmesh::metrics
