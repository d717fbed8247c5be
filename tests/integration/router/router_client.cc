// router-svc process start-up and the public Generate client used by the router integration tests.
#include "tests/integration/router/router_client.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace expertmesh::testing {

absl::StatusOr<std::unique_ptr<ServiceProcess>> StartRouter(const std::string& name,
                                                           const std::vector<std::string>& attention_addresses,
                                                           const std::vector<std::string>& extra_flags) {
  std::vector<std::string> arguments = {absl::StrCat("--tokenizer=", SourcePath("models/tokenizer.json")),
                                        absl::StrCat("--attention=", absl::StrJoin(attention_addresses, ","))};
  arguments.insert(arguments.end(), extra_flags.begin(), extra_flags.end());
  return ServiceProcess::Start(name, BinaryPath("router-svc"), arguments);
}

RouterClient::RouterClient(const std::string& address)
    : stub_(v1::RouterService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {}

RouterOutput RouterClient::Generate(const v1::GenerateRequest& request, std::chrono::milliseconds timeout,
                                    const std::function<void(grpc::ClientContext&)>& on_first_delta) {
  RouterOutput output;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      output.ids.insert(output.ids.end(), response.delta().token_ids().begin(), response.delta().token_ids().end());
      output.text += response.delta().text();
      output.text_deltas.push_back(response.delta().text());
      if (output.text_deltas.size() == 1 && on_first_delta) on_first_delta(context);
    } else if (response.has_usage()) {
      output.has_usage = true;
      output.usage = response.usage();
    }
  }
  output.status = reader->Finish();
  return output;
}

v1::GenerateRequest TextRequest(const std::string& text, uint32_t max_tokens) {
  v1::GenerateRequest request;
  request.set_text(text);
  request.set_max_tokens(max_tokens);
  return request;
}

v1::GenerateRequest IdsRequest(const std::vector<int32_t>& ids, uint32_t max_tokens) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
  request.set_max_tokens(max_tokens);
  return request;
}

}  // namespace expertmesh::testing
