// Bearer-token files, constant-time comparison, verification with logging.
#include "engine/rpc/admin_token.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace expertmesh::rpc {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

// Debian's Abseil has its own string_view type.
absl::string_view Absl(std::string_view text) { return absl::string_view(text.data(), text.size()); }

// Equal in time independent of where the strings differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  const size_t length = std::max(a.size(), b.size());
  for (size_t i = 0; i < length; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    difference |= x ^ y;
  }
  return difference == 0;
}

}  // namespace

absl::StatusOr<std::string> ReadAdminTokenFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read admin token file ", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  const std::string token(absl::StripAsciiWhitespace(text.str()));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("admin token file ", path.string(), " is empty"));
  for (char c : token) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("admin token file ", path.string(), " holds whitespace or control characters inside the token"));
    }
  }
  return token;
}

void AttachAdminToken(grpc::ClientContext& context, const std::string& token) {
  context.AddMetadata("authorization", absl::StrCat(kBearer, token));
}

absl::StatusOr<std::unique_ptr<AdminTokenVerifier>> AdminTokenVerifier::FromFile(const std::filesystem::path& path,
                                                                                 std::string service) {
  auto verifier = std::unique_ptr<AdminTokenVerifier>(new AdminTokenVerifier(path, std::move(service)));
  absl::StatusOr<std::string> token = verifier->CurrentToken();
  if (!token.ok()) return token.status();
  return verifier;
}

std::unique_ptr<AdminTokenVerifier> AdminTokenVerifier::Disabled(std::string service) {
  return std::unique_ptr<AdminTokenVerifier>(new AdminTokenVerifier({}, std::move(service)));
}

absl::StatusOr<std::string> AdminTokenVerifier::CurrentToken() const {
  std::error_code error;
  const auto modified = std::filesystem::last_write_time(path_, error);
  const auto size = error ? 0 : std::filesystem::file_size(path_, error);
  std::lock_guard<std::mutex> lock(mutex_);
  if (!error && !token_.empty() && modified == modified_ && size == size_) return token_;
  absl::StatusOr<std::string> token = ReadAdminTokenFile(path_);
  if (!token.ok()) return token.status();
  token_ = *token;
  modified_ = modified;
  size_ = size;
  return token_;
}

grpc::Status AdminTokenVerifier::Reject(std::string_view method, std::string_view peer, std::string_view reason) const {
  std::fprintf(stderr, "%s: admin call %.*s from %.*s rejected: %.*s\n", service_.c_str(), static_cast<int>(method.size()),
               method.data(), static_cast<int>(peer.size()), peer.data(), static_cast<int>(reason.size()), reason.data());
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, absl::StrCat("admin call ", Absl(method), ": ", Absl(reason)));
}

grpc::Status AdminTokenVerifier::CheckAuthorization(std::string_view authorization, std::string_view method,
                                                    std::string_view peer) const {
  if (!enabled()) return Reject(method, peer, "the admin API is disabled (the service has no --admin-token-file)");
  if (authorization.empty()) return Reject(method, peer, "no \"authorization: Bearer <token>\" metadata");
  if (!absl::StartsWith(Absl(authorization), kBearer)) return Reject(method, peer, "authorization is not a Bearer token");
  absl::StatusOr<std::string> token = CurrentToken();
  if (!token.ok()) return Reject(method, peer, absl::StrCat("the service cannot read its token: ", token.status().message()));
  if (!ConstantTimeEquals(Absl(authorization).substr(kBearer.size()), *token)) return Reject(method, peer, "wrong token");
  return grpc::Status::OK;
}

grpc::Status AdminTokenVerifier::Check(const grpc::ServerContext& context, std::string_view method) const {
  const auto& metadata = context.client_metadata();
  auto found = metadata.find("authorization");
  std::string_view authorization;
  if (found != metadata.end()) authorization = std::string_view(found->second.data(), found->second.size());
  return CheckAuthorization(authorization, method, context.peer());
}

}  // namespace expertmesh::rpc
