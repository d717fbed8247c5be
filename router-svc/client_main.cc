// expertmesh-client: streams one generation from router-svc to the terminal, then prints usage.
//   expertmesh-client --router 127.0.0.1:50051 --prompt "Once upon a time" --max-tokens 32
#include <cstdio>
#include <iostream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "expertmesh/v1/router_service.grpc.pb.h"

ABSL_FLAG(std::string, router, "127.0.0.1:50051", "router-svc address");
ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(std::string, ids, "", "prompt as comma-separated token ids (instead of --prompt)");
ABSL_FLAG(int, max_tokens, 32, "new tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature; 0 = greedy");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(std::string, blend, "", "serve with this blend");
ABSL_FLAG(std::string, ab_key, "", "A/B assignment key");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop strings");
ABSL_FLAG(int, timeout_seconds, 120, "deadline for the whole generation");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace v1 = expertmesh::v1;
  v1::GenerateRequest request;
  if (!absl::GetFlag(FLAGS_ids).empty()) {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_ids), ',', absl::SkipWhitespace())) {
      int id = 0;
      if (!absl::SimpleAtoi(part, &id)) {
        std::cerr << "error: --ids: '" << part << "' is not an integer\n";
        return 2;
      }
      request.mutable_token_ids()->add_ids(id);
    }
  } else {
    request.set_text(absl::GetFlag(FLAGS_prompt));
  }
  request.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  request.mutable_sampling()->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  request.mutable_sampling()->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  request.mutable_sampling()->set_seed(absl::GetFlag(FLAGS_seed));
  request.set_blend(absl::GetFlag(FLAGS_blend));
  request.set_ab_key(absl::GetFlag(FLAGS_ab_key));
  for (const auto& stop : absl::GetFlag(FLAGS_stop)) request.add_stop(stop);

  auto stub = v1::RouterService::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_router), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_timeout_seconds)));
  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse response;
  v1::Usage usage;
  std::string ids;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      std::cout << response.delta().text() << std::flush;
      for (int id : response.delta().token_ids()) ids += (ids.empty() ? "" : ",") + std::to_string(id);
    } else if (response.has_usage()) {
      usage = response.usage();
    }
  }
  const grpc::Status status = reader->Finish();
  std::cout << "\n";
  if (!status.ok()) {
    std::cerr << "error: " << status.error_code() << " " << status.error_message() << "\n";
    return 1;
  }
  std::fprintf(stderr,
               "ids: %s\nusage: prompt_tokens=%u completion_tokens=%u ttft=%.3fs blend=%s version=%llu finish=%s\n",
               ids.c_str(), usage.prompt_tokens(), usage.completion_tokens(), usage.time_to_first_token_seconds(),
               usage.blend().c_str(), static_cast<unsigned long long>(usage.blend_version()),
               v1::FinishReason_Name(usage.finish_reason()).c_str());
  return 0;
}
