// Helpers for the router integration tests: start a real router-svc process in front of given
// attention replicas, and run one public Generate call collecting ids, text deltas and usage.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "expertmesh/v1/router_service.grpc.pb.h"
#include "tests/integration/service_process.h"

namespace expertmesh::testing {

// router-svc --tokenizer models/tokenizer.json --attention <addresses> <extra_flags>.
absl::StatusOr<std::unique_ptr<ServiceProcess>> StartRouter(const std::string& name,
                                                           const std::vector<std::string>& attention_addresses,
                                                           const std::vector<std::string>& extra_flags = {});

struct RouterOutput {
  std::vector<int32_t> ids;
  std::string text;
  std::vector<std::string> text_deltas;
  bool has_usage = false;
  v1::Usage usage;
  grpc::Status status;
};

class RouterClient {
 public:
  explicit RouterClient(const std::string& address);
  // Runs Generate to its end. `on_first_delta` runs once, with the call's context (to cancel it).
  RouterOutput Generate(const v1::GenerateRequest& request,
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(30000),
                        const std::function<void(grpc::ClientContext&)>& on_first_delta = nullptr);

 private:
  std::unique_ptr<v1::RouterService::Stub> stub_;
};

v1::GenerateRequest TextRequest(const std::string& text, uint32_t max_tokens);
v1::GenerateRequest IdsRequest(const std::vector<int32_t>& ids, uint32_t max_tokens);

}  // namespace expertmesh::testing
