// expertmesh-admin: the operator's command line for live blends. Talks to router-svc's
// RouterAdminService (the whole fleet) or, with --shard, to one expert-svc's ExpertAdminService.
// The bearer token comes from --token-file, $EXPERTMESH_ADMIN_TOKEN_FILE or $EXPERTMESH_ADMIN_TOKEN.
// Long calls (load-parent, create-blend) print the shards' progress every second; Ctrl-C cancels
// them (the router then aborts every shard).
//   expertmesh-admin [--target ADDR] [--shard] [--token-file FILE] [--json] COMMAND ARGS...
//     list | load-parent NAME DIR | create-blend (--recipe FILE | --recipe-file NAME |
//     NAME --lambdas p=0.7,q=0.3 --base p [--delta D] [--merge GLOB,...] [--output-dtype bf16|f32])
//     | drop NAME | set-default NAME | set-split NAME=W [NAME=W ...] | clear-split | get-split
//     | (--shard only) commit NAME VERSION | abort NAME VERSION
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/rpc/admin_token.h"
#include "engine/rpc/command_line.h"
#include "expertmesh/v1/admin_service.grpc.pb.h"
#include "router-svc/admin_format.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "router-svc address (with --shard: an expert-svc address)");
ABSL_FLAG(bool, shard, false, "administer one expert-svc shard directly instead of the fleet through the router");
ABSL_FLAG(std::string, token_file, "",
          "file holding the admin token (default: $EXPERTMESH_ADMIN_TOKEN_FILE, else the token in $EXPERTMESH_ADMIN_TOKEN)");
ABSL_FLAG(bool, json, false, "print answers as JSON");
ABSL_FLAG(int, timeout_seconds, 3600, "deadline of the call");
ABSL_FLAG(std::string, recipe, "", "create-blend: a local recipe JSON file (docs/blends.md), sent as JSON");
ABSL_FLAG(std::string, recipe_file, "", "create-blend: a recipe file name inside the server's --recipes-dir");
ABSL_FLAG(std::string, lambdas, "", "create-blend NAME: parent=lambda,... in summation order");
ABSL_FLAG(std::string, base, "", "create-blend NAME: the base parent");
ABSL_FLAG(double, delta, 0.0, "create-blend NAME: difference threshold delta >= 0");
ABSL_FLAG(std::vector<std::string>, merge, {}, "create-blend NAME: globs of merged tensors (default: routed experts)");
ABSL_FLAG(std::string, output_dtype, "", "create-blend NAME: bf16 (default) or f32");
ABSL_FLAG(uint64_t, version, 0, "--shard: version for load-parent, create-blend, drop (0 = next / every version)");
ABSL_FLAG(bool, prepare_only, false, "--shard load-parent/create-blend: stop at PREPARED (then commit or abort)");
ABSL_FLAG(bool, wait, false, "--shard drop: wait until the set is freed");
ABSL_FLAG(bool, progress, true, "print build progress while load-parent / create-blend run");

namespace v1 = expertmesh::v1;
namespace admin = expertmesh::admin_cli;

namespace {

std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted = true; }

int Usage(const std::string& message) {
  std::fprintf(stderr, "expertmesh-admin: %s (see --help)\n", message.c_str());
  return 2;
}

absl::StatusOr<std::string> Token() {
  std::string file = absl::GetFlag(FLAGS_token_file);
  if (file.empty() && std::getenv("EXPERTMESH_ADMIN_TOKEN_FILE")) file = std::getenv("EXPERTMESH_ADMIN_TOKEN_FILE");
  if (!file.empty()) return expertmesh::rpc::ReadAdminTokenFile(file);
  if (const char* token = std::getenv("EXPERTMESH_ADMIN_TOKEN"); token && *token) return std::string(token);
  return std::string();  // the server answers UNAUTHENTICATED
}

class Client {
 public:
  Client(const std::string& target, std::string token)
      : channel_(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())),
        router_(v1::RouterAdminService::NewStub(channel_)),
        shard_(v1::ExpertAdminService::NewStub(channel_)),
        token_(std::move(token)) {}

  std::unique_ptr<grpc::ClientContext> Context(std::chrono::seconds timeout) const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + timeout);
    if (!token_.empty()) expertmesh::rpc::AttachAdminToken(*context, token_);
    return context;
  }
  v1::RouterAdminService::Stub& router() { return *router_; }
  v1::ExpertAdminService::Stub& shard() { return *shard_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RouterAdminService::Stub> router_;
  std::unique_ptr<v1::ExpertAdminService::Stub> shard_;
  std::string token_;
};

int Report(const grpc::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "error: %s: %s\n",
               absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())).c_str(),
               status.error_message().c_str());
  return 1;
}

void Print(const google::protobuf::Message& message, const std::string& text) {
  if (absl::GetFlag(FLAGS_json)) {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(message, &json, options);
    std::printf("%s", json.c_str());
  } else {
    std::printf("%s", text.c_str());
  }
}

// Runs a long call in a thread; meanwhile prints the builds in progress every second and cancels
// the call on Ctrl-C.
grpc::Status RunWithProgress(Client& client, grpc::ClientContext& context,
                             const std::function<grpc::Status()>& call) {
  grpc::Status status;
  std::atomic<bool> done{false};
  std::thread worker([&] {
    status = call();
    done = true;
  });
  auto next_poll = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  bool cancelled = false;
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (g_interrupted && !cancelled) {
      std::fprintf(stderr, "cancelling...\n");
      context.TryCancel();
      cancelled = true;
    }
    if (!absl::GetFlag(FLAGS_progress) || std::chrono::steady_clock::now() < next_poll) continue;
    next_poll += std::chrono::seconds(1);
    auto poll = client.Context(std::chrono::seconds(2));
    std::string lines;
    if (absl::GetFlag(FLAGS_shard)) {
      v1::ListWeightSetsResponse list;
      if (client.shard().ListWeightSets(poll.get(), v1::ListWeightSetsRequest(), &list).ok()) lines = admin::FormatBuilds(list);
    } else {
      v1::FleetWeightSets fleet;
      if (client.router().ListWeightSets(poll.get(), v1::ListWeightSetsRequest(), &fleet).ok()) {
        for (const auto& shard : fleet.shards()) lines += admin::FormatBuilds(shard);
      }
    }
    if (!lines.empty()) std::fprintf(stderr, "%s", lines.c_str());
  }
  worker.join();
  return status;
}

absl::StatusOr<v1::BlendRecipe> InlineRecipe(const std::string& name) {
  v1::BlendRecipe recipe;
  recipe.set_name(name);
  for (absl::string_view item : absl::StrSplit(absl::GetFlag(FLAGS_lambdas), ',', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(item, '=');
    double lambda = 0;
    if (parts.size() != 2 || !absl::SimpleAtod(parts[1], &lambda)) {
      return absl::InvalidArgumentError(absl::StrCat("--lambdas entry '", item, "' is not parent=lambda"));
    }
    v1::RecipeParent* parent = recipe.add_parents();
    parent->set_name(parts[0]);
    parent->set_lambda(lambda);
  }
  recipe.set_base(absl::GetFlag(FLAGS_base));
  recipe.set_delta(absl::GetFlag(FLAGS_delta));
  for (const std::string& glob : absl::GetFlag(FLAGS_merge)) recipe.add_merge(glob);
  recipe.set_output_dtype(absl::GetFlag(FLAGS_output_dtype));
  return recipe;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int Run(const std::vector<std::string>& args) {
  if (args.empty()) return Usage("missing command");
  absl::StatusOr<std::string> token = Token();
  if (!token.ok()) return Usage(std::string(token.status().message()));
  Client client(absl::GetFlag(FLAGS_target), *token);
  const bool shard = absl::GetFlag(FLAGS_shard);
  const std::string& command = args[0];
  const auto timeout = std::chrono::seconds(absl::GetFlag(FLAGS_timeout_seconds));
  auto context = client.Context(timeout);
  auto need = [&](size_t count) { return args.size() == count + 1; };

  if (command == "list") {
    if (shard) {
      v1::ListWeightSetsResponse list;
      const grpc::Status status = client.shard().ListWeightSets(context.get(), v1::ListWeightSetsRequest(), &list);
      if (status.ok()) Print(list, admin::FormatShard(list));
      return Report(status);
    }
    v1::FleetWeightSets fleet;
    const grpc::Status status = client.router().ListWeightSets(context.get(), v1::ListWeightSetsRequest(), &fleet);
    if (status.ok()) Print(fleet, admin::FormatFleet(fleet));
    return Report(status);
  }
  if (command == "load-parent") {
    if (!need(2)) return Usage("load-parent NAME CHECKPOINT_DIR");
    v1::LoadParentRequest request;
    request.set_name(args[1]);
    request.set_checkpoint(args[2]);
    if (shard) {
      request.set_version(absl::GetFlag(FLAGS_version));
      request.set_prepare_only(absl::GetFlag(FLAGS_prepare_only));
      v1::WeightSetResponse response;
      const grpc::Status status = RunWithProgress(
          client, *context, [&] { return client.shard().LoadParent(context.get(), request, &response); });
      if (status.ok()) Print(response, admin::FormatWeightSet(response.weight_set()) + "\n");
      return Report(status);
    }
    v1::FleetWeightSet response;
    const grpc::Status status =
        RunWithProgress(client, *context, [&] { return client.router().LoadParent(context.get(), request, &response); });
    if (status.ok()) Print(response, admin::FormatFleetWeightSet(response) + "\n");
    return Report(status);
  }
  if (command == "create-blend") {
    std::string recipe_json;
    absl::StatusOr<v1::BlendRecipe> inline_recipe = absl::InvalidArgumentError("unset");
    if (!absl::GetFlag(FLAGS_recipe).empty()) {
      if (!need(0)) return Usage("create-blend --recipe FILE takes no NAME");
      absl::StatusOr<std::string> text = ReadFile(absl::GetFlag(FLAGS_recipe));
      if (!text.ok()) return Usage(std::string(text.status().message()));
      recipe_json = *text;
    } else if (absl::GetFlag(FLAGS_recipe_file).empty()) {
      if (!need(1)) return Usage("create-blend NAME --lambdas p=L,... --base P (or --recipe FILE / --recipe-file NAME)");
      inline_recipe = InlineRecipe(args[1]);
      if (!inline_recipe.ok()) return Usage(std::string(inline_recipe.status().message()));
    }
    if (shard) {
      v1::PrepareBlendRequest request;
      if (!recipe_json.empty()) {
        request.set_recipe_json(recipe_json);
      } else if (inline_recipe.ok()) {
        *request.mutable_recipe() = *inline_recipe;
      } else {
        request.set_recipe_file(absl::GetFlag(FLAGS_recipe_file));
      }
      request.set_version(absl::GetFlag(FLAGS_version));
      request.set_prepare_only(absl::GetFlag(FLAGS_prepare_only));
      v1::WeightSetResponse response;
      const grpc::Status status = RunWithProgress(
          client, *context, [&] { return client.shard().PrepareBlend(context.get(), request, &response); });
      if (status.ok()) Print(response, admin::FormatWeightSet(response.weight_set()) + "\n");
      return Report(status);
    }
    v1::CreateBlendRequest request;
    if (!recipe_json.empty()) {
      request.set_recipe_json(recipe_json);
    } else if (inline_recipe.ok()) {
      *request.mutable_recipe() = *inline_recipe;
    } else {
      request.set_recipe_file(absl::GetFlag(FLAGS_recipe_file));
    }
    v1::FleetWeightSet response;
    const grpc::Status status =
        RunWithProgress(client, *context, [&] { return client.router().CreateBlend(context.get(), request, &response); });
    if (status.ok()) Print(response, admin::FormatFleetWeightSet(response) + "\n");
    return Report(status);
  }
  if (command == "drop") {
    if (!need(1)) return Usage("drop NAME");
    if (shard) {
      v1::DropWeightSetRequest request;
      request.set_name(args[1]);
      request.set_version(absl::GetFlag(FLAGS_version));
      request.set_wait(absl::GetFlag(FLAGS_wait));
      v1::WeightSetResponse response;
      const grpc::Status status = client.shard().DropWeightSet(context.get(), request, &response);
      if (status.ok()) Print(response, admin::FormatWeightSet(response.weight_set()) + "\n");
      return Report(status);
    }
    v1::DropBlendRequest request;
    request.set_name(args[1]);
    v1::FleetWeightSets response;
    const grpc::Status status = client.router().DropBlend(context.get(), request, &response);
    if (status.ok()) Print(response, admin::FormatFleet(response));
    return Report(status);
  }
  if (command == "set-default") {
    if (!need(1)) return Usage("set-default NAME");
    v1::SetDefaultRequest request;
    request.set_name(args[1]);
    if (shard) {
      v1::ListWeightSetsResponse response;
      const grpc::Status status = client.shard().SetDefault(context.get(), request, &response);
      if (status.ok()) Print(response, admin::FormatShard(response));
      return Report(status);
    }
    v1::FleetWeightSets response;
    const grpc::Status status = client.router().SetDefault(context.get(), request, &response);
    if (status.ok()) Print(response, admin::FormatFleet(response));
    return Report(status);
  }
  if (command == "set-split" || command == "clear-split" || command == "get-split") {
    if (shard) return Usage("the traffic split lives in the router (drop --shard)");
    v1::TrafficSplit response;
    grpc::Status status;
    if (command == "get-split") {
      if (!need(0)) return Usage("get-split takes no arguments");
      status = client.router().GetTrafficSplit(context.get(), v1::GetTrafficSplitRequest(), &response);
    } else {
      v1::TrafficSplit request;
      if (command == "set-split") {
        if (args.size() < 2) return Usage("set-split NAME=WEIGHT [NAME=WEIGHT ...]");
        for (size_t i = 1; i < args.size(); ++i) {
          std::vector<std::string> parts = absl::StrSplit(args[i], '=');
          double weight = 0;
          if (parts.size() != 2 || !absl::SimpleAtod(parts[1], &weight)) {
            return Usage(absl::StrCat("'", args[i], "' is not NAME=WEIGHT"));
          }
          (*request.mutable_weights())[parts[0]] = weight;
        }
      } else if (!need(0)) {
        return Usage("clear-split takes no arguments");
      }
      status = client.router().SetTrafficSplit(context.get(), request, &response);
    }
    if (status.ok()) Print(response, admin::FormatSplit(response));
    return Report(status);
  }
  if (command == "commit" || command == "abort") {
    if (!shard) return Usage(absl::StrCat(command, " is a shard command (--shard); the router commits by itself"));
    uint64_t version = 0;
    if (!need(2) || !absl::SimpleAtoi(args[2], &version)) return Usage(absl::StrCat(command, " NAME VERSION"));
    v1::WeightSetResponse response;
    grpc::Status status;
    if (command == "commit") {
      v1::CommitBlendRequest request;
      request.set_name(args[1]);
      request.set_version(version);
      status = client.shard().CommitBlend(context.get(), request, &response);
    } else {
      v1::AbortBlendRequest request;
      request.set_name(args[1]);
      request.set_version(version);
      status = client.shard().AbortBlend(context.get(), request, &response);
    }
    if (status.ok()) Print(response, response.has_weight_set() ? admin::FormatWeightSet(response.weight_set()) + "\n" : "");
    return Report(status);
  }
  return Usage(absl::StrCat("unknown command '", command, "'"));
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "expertmesh-admin [--target ADDR] [--shard] [--token-file FILE] [--json] COMMAND ...\n"
      "  list | load-parent NAME DIR | create-blend (--recipe FILE | --recipe-file NAME | NAME --lambdas p=L,... "
      "--base P [--delta D]) | drop NAME | set-default NAME | set-split NAME=W ... | clear-split | get-split | "
      "commit NAME VERSION (--shard) | abort NAME VERSION (--shard)");
  const std::vector<std::string> args = expertmesh::rpc::ParseDashedCommandLine(argc, argv);
  signal(SIGINT, OnInterrupt);
  return Run(args);
}
