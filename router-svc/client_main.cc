// expertmesh-client: streams one generation from router-svc to the terminal (text on stdout as
// it arrives, then ids and usage on stderr); Ctrl-C cancels the request on the server too. With
// --health it is a grpc.health.v1 probe for scripts: waits until ADDR reports SERVING.
//   expertmesh-client --router 127.0.0.1:50051 --prompt "Once upon a time" --max-tokens 32
//   expertmesh-client --health 127.0.0.1:50051 --wait-seconds 30
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/rpc/command_line.h"
#include "expertmesh/v1/router_service.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, router, "127.0.0.1:50051", "router-svc address");
ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(std::string, ids, "", "prompt as comma-separated token ids (instead of --prompt)");
ABSL_FLAG(int, max_tokens, 32, "new tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature; 0 = greedy");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(std::string, blend, "", "serve with this blend");
ABSL_FLAG(std::string, ab_key, "", "A/B assignment key");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop strings, comma separated; C escapes such as \\n work");
ABSL_FLAG(int, timeout_seconds, 120, "deadline for the whole generation");
ABSL_FLAG(bool, quiet, false, "print only the generated text (no ids/usage lines)");
ABSL_FLAG(std::string, health, "", "instead of generating: wait until this address reports SERVING");
ABSL_FLAG(std::string, health_service, "", "service name for --health ('' = the whole server)");
ABSL_FLAG(int, wait_seconds, 30, "how long --health waits");

namespace v1 = expertmesh::v1;

namespace {

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

int HealthCheck(const std::string& address) {
  // Retry the connection quickly: the server is usually still starting.
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments));
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_wait_seconds));
  std::string last = "no answer";
  do {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    // Wait for the connection instead of failing fast: with gRPC 1.51, fail-fast calls on a
    // channel in TRANSIENT_FAILURE hold back its reconnection for seconds.
    context.set_wait_for_ready(true);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(absl::GetFlag(FLAGS_health_service));
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    if (status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING) return 0;
    last = status.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
                       : CodeName(status.error_code()) + " " + status.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < give_up);
  std::cerr << "error: " << address << " not serving after " << absl::GetFlag(FLAGS_wait_seconds) << " s: " << last
            << "\n";
  return 1;
}

bool BuildRequest(v1::GenerateRequest* request) {
  if (!absl::GetFlag(FLAGS_ids).empty()) {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_ids), ',', absl::SkipWhitespace())) {
      int id = 0;
      if (!absl::SimpleAtoi(part, &id)) {
        std::cerr << "error: --ids: '" << part << "' is not an integer\n";
        return false;
      }
      request->mutable_token_ids()->add_ids(id);
    }
  } else {
    request->set_text(absl::GetFlag(FLAGS_prompt));
  }
  if (absl::GetFlag(FLAGS_max_tokens) < 0) {
    std::cerr << "error: --max-tokens must be >= 0\n";
    return false;
  }
  request->set_max_tokens(static_cast<uint32_t>(absl::GetFlag(FLAGS_max_tokens)));
  request->mutable_sampling()->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  request->mutable_sampling()->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  request->mutable_sampling()->set_seed(absl::GetFlag(FLAGS_seed));
  request->set_blend(absl::GetFlag(FLAGS_blend));
  request->set_ab_key(absl::GetFlag(FLAGS_ab_key));
  for (const std::string& stop : absl::GetFlag(FLAGS_stop)) {
    std::string unescaped;
    std::string error;
    if (!absl::CUnescape(stop, &unescaped, &error)) {
      std::cerr << "error: --stop '" << stop << "': " << error << "\n";
      return false;
    }
    request->add_stop(unescaped);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "expertmesh-client --router ADDR (--prompt TEXT | --ids 1,2,3) [--max-tokens N --temperature T --top-p P "
      "--seed S --stop S --blend B --ab-key K]  |  expertmesh-client --health ADDR [--wait-seconds N]");
  // Ctrl-C is handled by a thread that cancels the call, so block it before any thread starts.
  sigset_t interrupt;
  sigemptyset(&interrupt);
  sigaddset(&interrupt, SIGINT);
  pthread_sigmask(SIG_BLOCK, &interrupt, nullptr);
  expertmesh::rpc::ParseDashedCommandLine(argc, argv);  // --max-tokens too
  if (!absl::GetFlag(FLAGS_health).empty()) return HealthCheck(absl::GetFlag(FLAGS_health));

  v1::GenerateRequest request;
  if (!BuildRequest(&request)) return 2;
  auto stub = v1::RouterService::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_router), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_timeout_seconds)));
  std::thread([&context, interrupt] {
    int received = 0;
    sigwait(&interrupt, &received);
    std::cerr << "\ninterrupted: cancelling the request\n";
    context.TryCancel();
  }).detach();

  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse response;
  v1::Usage usage;
  bool have_usage = false;
  std::vector<int> ids;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      std::cout << response.delta().text() << std::flush;
      ids.insert(ids.end(), response.delta().token_ids().begin(), response.delta().token_ids().end());
    } else if (response.has_usage()) {
      usage = response.usage();
      have_usage = true;
    }
  }
  const grpc::Status status = reader->Finish();
  std::cout << "\n" << std::flush;
  if (!absl::GetFlag(FLAGS_quiet) && have_usage) {
    std::fprintf(stderr,
                 "ids: %s\nusage: prompt_tokens=%u completion_tokens=%u ttft=%.3fs blend='%s' version=%llu "
                 "finish=%s\n",
                 absl::StrJoin(ids, ",").c_str(), usage.prompt_tokens(), usage.completion_tokens(),
                 usage.time_to_first_token_seconds(), usage.blend().c_str(),
                 static_cast<unsigned long long>(usage.blend_version()),
                 v1::FinishReason_Name(usage.finish_reason()).c_str());
  }
  if (!status.ok()) {
    std::cerr << "error: " << CodeName(status.error_code()) << ": " << status.error_message() << "\n";
    return status.error_code() == grpc::StatusCode::CANCELLED ? 130 : 1;
  }
  return 0;
}
