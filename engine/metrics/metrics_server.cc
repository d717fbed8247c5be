// MetricsServer: the listening socket, the serving thread's poll loop over its connections
// (read the request head, write the answer, drain until the client closes), and shutdown.
#include "engine/metrics/metrics_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/metrics/http_exposition.h"

namespace expertmesh::metrics {
namespace {

using Clock = std::chrono::steady_clock;

struct Connection {
  enum class Phase { kReading, kWriting, kDraining };
  int fd = -1;
  Phase phase = Phase::kReading;
  std::string received;
  std::string response;
  size_t sent = 0;
  Clock::time_point deadline;
};

// Reads what is there; false when the peer closed or the socket failed.
bool ReadAvailable(int fd, std::string* into, size_t limit) {
  char buffer[4096];
  while (into->size() < limit) {
    ssize_t got = recv(fd, buffer, sizeof buffer, 0);
    if (got > 0) {
      into->append(buffer, static_cast<size_t>(got));
      continue;
    }
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (got < 0 && errno == EINTR) continue;
    return false;
  }
  return true;
}

// Advances a connection after poll reported `events`; false when it is finished.
bool Advance(Connection& connection, short events, const std::function<std::string()>& exposition,
             std::atomic<uint64_t>& scrapes_served) {
  if (events & (POLLERR | POLLNVAL)) return false;
  if (connection.phase == Connection::Phase::kReading) {
    bool open = ReadAvailable(connection.fd, &connection.received, kMaxRequestHeadBytes + 1);
    size_t head_length = RequestHeadLength(connection.received);
    if (head_length > 0 && head_length <= kMaxRequestHeadBytes) {
      connection.response = RespondToRequestHead(std::string_view(connection.received).substr(0, head_length), exposition);
      if (connection.response.starts_with("HTTP/1.1 200")) scrapes_served.fetch_add(1);
    } else if (connection.received.size() > kMaxRequestHeadBytes) {
      connection.response = RequestHeadTooLargeResponse();
    } else {
      return open;  // head not complete yet
    }
    connection.received.clear();
    connection.phase = Connection::Phase::kWriting;
  }
  if (connection.phase == Connection::Phase::kWriting) {
    while (connection.sent < connection.response.size()) {
      ssize_t wrote = send(connection.fd, connection.response.data() + connection.sent,
                           connection.response.size() - connection.sent, MSG_NOSIGNAL);
      if (wrote > 0) {
        connection.sent += static_cast<size_t>(wrote);
      } else if (wrote < 0 && errno == EINTR) {
        continue;
      } else {
        return wrote < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
      }
    }
    // All sent: half-close and wait for the client's close, so unread request bytes cannot turn
    // into a reset that discards the answer.
    shutdown(connection.fd, SHUT_WR);
    connection.phase = Connection::Phase::kDraining;
    return true;
  }
  std::string discarded;
  bool open = ReadAvailable(connection.fd, &discarded, 1 << 16);
  return open && !(events & POLLHUP);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    std::string_view listen_address, std::vector<std::shared_ptr<prometheus::Collectable>> collectables) {
  absl::StatusOr<ListenAddress> address = ParseListenAddress(listen_address);
  if (!address.ok()) return address.status();
  absl::StatusOr<BoundSocket> bound = BindListeningSocket(*address, listen_address);
  if (!bound.ok()) return bound.status();
  auto server = std::unique_ptr<MetricsServer>(new MetricsServer());
  server->address_ = *address;
  server->listen_fd_ = bound->fd;
  server->port_ = bound->port;
  server->collectables_ = std::move(collectables);
  server->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (server->wake_fd_ < 0) {
    return absl::InternalError(absl::StrCat("metrics server: eventfd: ", std::strerror(errno)));
  }
  server->thread_ = std::thread([raw = server.get()] { raw->Serve(); });
  return server;
}

MetricsServer::~MetricsServer() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  if (wake_fd_ >= 0) close(wake_fd_);
  if (listen_fd_ >= 0) close(listen_fd_);
}

std::string MetricsServer::url() const { return absl::StrCat("http://", address_.ClientHost(), ":", port_, "/metrics"); }

std::string MetricsServer::Exposition() const {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& collectable : collectables_) {
    std::vector<prometheus::MetricFamily> collected = collectable->Collect();
    families.insert(families.end(), std::make_move_iterator(collected.begin()),
                    std::make_move_iterator(collected.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

void MetricsServer::Serve() {
  std::vector<Connection> connections;
  const std::function<std::string()> exposition = [this] { return Exposition(); };
  std::vector<pollfd> polled;
  while (true) {
    polled.clear();
    polled.push_back({wake_fd_, POLLIN, 0});
    const bool accepting = connections.size() < kMaxConnections;
    polled.push_back({listen_fd_, static_cast<short>(accepting ? POLLIN : 0), 0});
    Clock::time_point now = Clock::now();
    int timeout_ms = -1;
    for (const Connection& connection : connections) {
      short events = connection.phase == Connection::Phase::kWriting ? POLLOUT : POLLIN;
      polled.push_back({connection.fd, events, 0});
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(connection.deadline - now).count();
      int left_ms = static_cast<int>(std::clamp<int64_t>(left + 1, 0, 60000));
      timeout_ms = timeout_ms < 0 ? left_ms : std::min(timeout_ms, left_ms);
    }
    if (poll(polled.data(), polled.size(), timeout_ms) < 0 && errno != EINTR) {
      std::fprintf(stderr, "metrics server: poll: %s\n", std::strerror(errno));
      return;
    }
    if (polled[0].revents != 0) break;  // stop requested
    now = Clock::now();
    std::vector<Connection> still_open;
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& connection = connections[i];
      short events = polled[i + 2].revents;
      bool open = connection.deadline > now;
      if (open && events != 0) open = Advance(connection, events, exposition, scrapes_served_);
      if (open) {
        still_open.push_back(std::move(connection));
      } else {
        close(connection.fd);
      }
    }
    connections = std::move(still_open);
    if (polled[1].revents & POLLIN) {
      while (connections.size() < kMaxConnections) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;  // EAGAIN, or a client gone before accept: poll again
        connections.push_back(Connection{.fd = fd, .deadline = now + kConnectionDeadline});
      }
    }
  }
  for (Connection& connection : connections) close(connection.fd);
}

}  // namespace expertmesh::metrics
