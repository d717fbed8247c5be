// --attention spec parsing: lists, @FILE, dns:NAME:PORT, and clear errors for malformed entries.
#include "router-svc/replica_addresses.h"

#include <cstdio>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace expertmesh::router_service {
namespace {

using ::testing::ElementsAre;

TEST(ReplicaAddressesTest, CommaListKeepsOrderAndDropsDuplicatesAndBlanks) {
  auto addresses = ResolveReplicaAddresses(" 10.0.0.2:7000, 10.0.0.1:7000,,10.0.0.2:7000 ");
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  EXPECT_THAT(*addresses, ElementsAre("10.0.0.2:7000", "10.0.0.1:7000"));
}

TEST(ReplicaAddressesTest, FileListSkipsCommentsAndBlankLines) {
  const std::string path = ::testing::TempDir() + "/replicas.txt";
  {
    std::ofstream file(path);
    file << "# attention replicas\n127.0.0.1:6001\n\n  127.0.0.1:6002  \n";
  }
  auto addresses = ResolveReplicaAddresses("@" + path);
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  EXPECT_THAT(*addresses, ElementsAre("127.0.0.1:6001", "127.0.0.1:6002"));
  std::remove(path.c_str());
}

TEST(ReplicaAddressesTest, DnsEntryExpandsToEveryAddress) {
  auto addresses = ResolveReplicaAddresses("dns:localhost:6100");
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  ASSERT_FALSE(addresses->empty());
  for (const std::string& address : *addresses) {
    EXPECT_TRUE(address == "127.0.0.1:6100" || address == "[::1]:6100") << address;
  }
}

TEST(ReplicaAddressesTest, MalformedSpecsAreRefusedWithTheReason) {
  EXPECT_EQ(ResolveReplicaAddresses("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveReplicaAddresses(" , ").status().code(), absl::StatusCode::kInvalidArgument);
  const auto no_port = ResolveReplicaAddresses("localhost");
  EXPECT_EQ(no_port.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_port.status().message().find("host:port"), std::string::npos) << no_port.status();
  EXPECT_EQ(ResolveReplicaAddresses("localhost:http").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveReplicaAddresses("localhost:70000").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveReplicaAddresses("dns:localhost").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveReplicaAddresses("@/nonexistent/replicas.txt").status().code(), absl::StatusCode::kNotFound);
  // (A dns: name that does not resolve is UNAVAILABLE; not tested here: CI may have no resolver.)
}

}  // namespace
}  // namespace expertmesh::router_service
