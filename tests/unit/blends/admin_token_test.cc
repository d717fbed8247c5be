// Admin bearer tokens: file reading, verification of the authorization metadata (missing,
// malformed, wrong, right), a disabled admin API, and a rotated token file taking effect.
#include "engine/rpc/admin_token.h"

#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/merge/merge_test_util.h"

namespace expertmesh::rpc {
namespace {

void Write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

TEST(AdminTokenTest, ReadsTrimmedTokensAndRejectsEmptyOnes) {
  testing::TempDir dir;
  Write(dir.path() / "token", "  s3cret\n");
  EXPECT_EQ(*ReadAdminTokenFile(dir.path() / "token"), "s3cret");
  Write(dir.path() / "empty", "\n \n");
  EXPECT_EQ(ReadAdminTokenFile(dir.path() / "empty").status().code(), absl::StatusCode::kInvalidArgument);
  Write(dir.path() / "spaced", "two words");
  EXPECT_EQ(ReadAdminTokenFile(dir.path() / "spaced").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadAdminTokenFile(dir.path() / "missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(AdminTokenVerifier::FromFile(dir.path() / "missing", "test").ok());
}

TEST(AdminTokenTest, OnlyTheRightBearerTokenPasses) {
  testing::TempDir dir;
  Write(dir.path() / "token", "s3cret");
  auto verifier = AdminTokenVerifier::FromFile(dir.path() / "token", "test");
  ASSERT_TRUE(verifier.ok());
  EXPECT_TRUE((*verifier)->CheckAuthorization("Bearer s3cret", "List", "peer").ok());
  for (const char* bad : {"", "s3cret", "Basic s3cret", "Bearer s3cre", "Bearer s3cret2", "Bearer ", "bearer s3cret"}) {
    const grpc::Status status = (*verifier)->CheckAuthorization(bad, "List", "peer");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bad;
    EXPECT_EQ(status.error_message().find("s3cret"), std::string::npos) << "the token never appears in errors";
  }
  auto disabled = AdminTokenVerifier::Disabled("test");
  const grpc::Status off = disabled->CheckAuthorization("Bearer s3cret", "List", "peer");
  EXPECT_EQ(off.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(off.error_message().find("disabled"), std::string::npos);
}

TEST(AdminTokenTest, RotatedTokenFileTakesEffect) {
  testing::TempDir dir;
  const auto path = dir.path() / "token";
  Write(path, "first-token");
  auto verifier = AdminTokenVerifier::FromFile(path, "test");
  ASSERT_TRUE(verifier.ok());
  EXPECT_TRUE((*verifier)->CheckAuthorization("Bearer first-token", "List", "peer").ok());
  Write(path, "second-token-longer");  // another size: noticed even within one mtime tick
  EXPECT_TRUE((*verifier)->CheckAuthorization("Bearer second-token-longer", "List", "peer").ok());
  EXPECT_FALSE((*verifier)->CheckAuthorization("Bearer first-token", "List", "peer").ok());
}

}  // namespace
}  // namespace expertmesh::rpc
