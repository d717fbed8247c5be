// Admin authentication shared by the services' admin APIs and their clients: a bearer token in
// the call metadata ("authorization: Bearer <token>"), the same secret on every service, read
// from a file (a Kubernetes Secret mount). The verifier re-reads the file when it changes, so a
// rotated Secret takes effect without a restart. Rejected calls are logged with the method and the
// peer and a reason, never with a token. Tokens compare in constant time.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace expertmesh::rpc {

// The token in `path`, surrounding whitespace removed. NOT_FOUND if unreadable,
// INVALID_ARGUMENT if empty or containing whitespace or control characters inside.
absl::StatusOr<std::string> ReadAdminTokenFile(const std::filesystem::path& path);

// Adds "authorization: Bearer <token>" to an outgoing call.
void AttachAdminToken(grpc::ClientContext& context, const std::string& token);

class AdminTokenVerifier {
 public:
  // Reads the token now (errors as ReadAdminTokenFile); `service` prefixes log lines.
  static absl::StatusOr<std::unique_ptr<AdminTokenVerifier>> FromFile(const std::filesystem::path& path,
                                                                      std::string service);
  // A verifier without a token: every call is UNAUTHENTICATED ("admin API disabled").
  static std::unique_ptr<AdminTokenVerifier> Disabled(std::string service);

  // OK when the call carries the right bearer token, else UNAUTHENTICATED (logged).
  grpc::Status Check(const grpc::ServerContext& context, std::string_view method) const;
  // The same check on an "authorization" header value ("" when absent); `peer` is for the log.
  grpc::Status CheckAuthorization(std::string_view authorization, std::string_view method,
                                  std::string_view peer) const;

  bool enabled() const { return !path_.empty(); }

 private:
  AdminTokenVerifier(std::filesystem::path path, std::string service) : path_(std::move(path)), service_(std::move(service)) {}
  // The current token (re-read when the file's size or modification time changed).
  absl::StatusOr<std::string> CurrentToken() const;
  grpc::Status Reject(std::string_view method, std::string_view peer, std::string_view reason) const;

  const std::filesystem::path path_;
  const std::string service_;
  mutable std::mutex mutex_;
  mutable std::string token_;
  mutable std::filesystem::file_time_type modified_{};
  mutable uintmax_t size_ = 0;
};

}  // namespace expertmesh::rpc
