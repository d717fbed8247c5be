// Placement table, concurrent per-layer fan-out, replica balancing and failover.
#include "attention-svc/expert_fanout.h"

#include <netdb.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <fstream>
#include <future>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/core/status_macros.h"
#include "engine/rpc/tensor_payload.h"

namespace expertmesh::attention_service {
namespace {

// Key identifying what a replica hosts: "layer:e,e,e;layer:...".
std::string HostedKey(const v1::ExpertShardDescription& description) {
  std::string key;
  for (const auto& layer : description.layers()) {
    absl::StrAppend(&key, layer.layer(), ":", absl::StrJoin(layer.expert_ids(), ","), ";");
  }
  return key;
}

absl::StatusOr<std::vector<std::string>> ResolveDns(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  if (int error = getaddrinfo(host.c_str(), port.c_str(), &hints, &results); error != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", host, ": ", gai_strerror(error)));
  }
  std::set<std::string> addresses;
  for (addrinfo* entry = results; entry; entry = entry->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (entry->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(entry->ai_addr)->sin_addr, text, sizeof(text));
      addresses.insert(absl::StrCat(text, ":", port));
    } else if (entry->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(entry->ai_addr)->sin6_addr, text, sizeof(text));
      addresses.insert(absl::StrCat("[", text, "]:", port));
    }
  }
  freeaddrinfo(results);
  return std::vector<std::string>(addresses.begin(), addresses.end());
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ResolveShardAddresses(const std::string& spec) {
  std::vector<std::string> entries;
  if (absl::StartsWith(spec, "@")) {
    std::ifstream file(spec.substr(1));
    if (!file) return absl::NotFoundError(absl::StrCat("cannot read shard list ", spec.substr(1)));
    for (std::string line; std::getline(file, line);) {
      line = std::string(absl::StripAsciiWhitespace(line));
      if (!line.empty() && line[0] != '#') entries.push_back(line);
    }
  } else {
    for (absl::string_view entry : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
      entries.emplace_back(absl::StripAsciiWhitespace(entry));
    }
  }
  std::vector<std::string> addresses;
  for (const std::string& entry : entries) {
    if (absl::StartsWith(entry, "dns:")) {
      const std::string target = entry.substr(4);
      const size_t colon = target.rfind(':');
      if (colon == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("missing port in ", entry));
      EXPERTMESH_ASSIGN_OR_RETURN(auto resolved, ResolveDns(target.substr(0, colon), target.substr(colon + 1)));
      addresses.insert(addresses.end(), resolved.begin(), resolved.end());
    } else {
      addresses.push_back(entry);
    }
  }
  if (addresses.empty()) return absl::InvalidArgumentError(absl::StrCat("no expert shard addresses in '", spec, "'"));
  return addresses;
}

absl::StatusOr<std::unique_ptr<ExpertFanout>> ExpertFanout::Create(const ModelConfig& config,
                                                                   const std::vector<std::string>& addresses,
                                                                   FanoutOptions options) {
  auto fanout = std::unique_ptr<ExpertFanout>(new ExpertFanout());
  fanout->options_ = options;
  fanout->num_experts_ = config.n_routed_experts;
  for (const std::string& address : addresses) {
    EXPERTMESH_ASSIGN_OR_RETURN(auto connection, ShardConnection::Connect(address, options.connect_timeout));
    const auto& description = connection->description();
    if (description.hidden_size() != config.hidden_size ||
        description.num_routed_experts() != config.n_routed_experts) {
      return absl::FailedPreconditionError(absl::StrCat(
          "expert shard ", address, " serves hidden_size ", description.hidden_size(), " with ",
          description.num_routed_experts(), " experts; the model has ", config.hidden_size, " and ",
          config.n_routed_experts));
    }
    fanout->connections_.push_back(std::move(connection));
  }
  EXPERTMESH_RETURN_IF_ERROR(fanout->BuildPlacement(config));
  fanout->reconnector_ = std::thread([raw = fanout.get()] { raw->ReconnectLoop(); });
  return fanout;
}

absl::Status ExpertFanout::BuildPlacement(const ModelConfig& config) {
  std::map<std::string, int> group_by_key;
  std::vector<int> group_of_connection;
  for (auto& connection : connections_) {
    const std::string key = HostedKey(connection->description());
    auto [entry, inserted] = group_by_key.emplace(key, static_cast<int>(groups_.size()));
    if (inserted) groups_.push_back(std::make_unique<ShardGroup>());
    groups_[entry->second]->replicas.push_back(connection.get());
    group_of_connection.push_back(entry->second);
  }
  group_of_expert_.assign(config.num_hidden_layers, std::vector<int>());
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (config.IsMoeLayer(layer)) group_of_expert_[layer].assign(config.n_routed_experts, -1);
  }
  for (size_t c = 0; c < connections_.size(); ++c) {
    for (const auto& layer : connections_[c]->description().layers()) {
      if (layer.layer() >= group_of_expert_.size() || group_of_expert_[layer.layer()].empty()) {
        return absl::FailedPreconditionError(absl::StrCat("expert shard ", connections_[c]->address(),
                                                          " hosts experts for layer ", layer.layer(),
                                                          ", which is not an MoE layer of this model"));
      }
      for (uint32_t expert : layer.expert_ids()) {
        if (expert >= static_cast<uint32_t>(config.n_routed_experts)) {
          return absl::FailedPreconditionError(absl::StrCat("expert shard ", connections_[c]->address(),
                                                            " reports expert ", expert, " out of range"));
        }
        int& group = group_of_expert_[layer.layer()][expert];
        if (group == -1) group = group_of_connection[c];
      }
    }
  }
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    std::vector<int64_t> missing;
    for (size_t expert = 0; expert < group_of_expert_[layer].size(); ++expert) {
      if (group_of_expert_[layer][expert] == -1) missing.push_back(expert);
    }
    if (!missing.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("no expert shard hosts expert(s) ", absl::StrJoin(missing, ","),
                                                        " of layer ", layer, " (shards: ",
                                                        absl::StrJoin(addresses(), ", "), ")"));
    }
  }
  return absl::OkStatus();
}

ExpertFanout::~ExpertFanout() {
  stopping_ = true;
  if (reconnector_.joinable()) reconnector_.join();
}

void ExpertFanout::ReconnectLoop() {
  while (!stopping_) {
    for (auto& connection : connections_) {
      if (stopping_) return;
      if (!connection->healthy()) {
        // Errors are expected while the shard is down; the next round tries again.
        (void)connection->Reconnect(std::chrono::milliseconds(200));
      }
    }
    for (auto waited = std::chrono::milliseconds(0); waited < options_.reconnect_interval && !stopping_;
         waited += std::chrono::milliseconds(50)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

int ExpertFanout::num_healthy_replicas() const {
  int healthy = 0;
  for (const auto& connection : connections_) healthy += connection->healthy();
  return healthy;
}

std::vector<std::string> ExpertFanout::addresses() const {
  std::vector<std::string> result;
  for (const auto& connection : connections_) result.push_back(connection->address());
  return result;
}

absl::Status ExpertFanout::Compute(const RoutedExpertBatch& batch, std::span<float> output) {
  if (batch.layer < 0 || batch.layer >= static_cast<int64_t>(group_of_expert_.size()) ||
      group_of_expert_[batch.layer].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", batch.layer, " is not an MoE layer"));
  }
  const auto& group_of_expert = group_of_expert_[batch.layer];
  const int64_t hidden = batch.hidden_size;
  const int64_t slots = batch.top_k;

  // Per group: the tokens it serves and, per token, its slots (other groups' slots are -1).
  struct GroupWork {
    std::vector<int64_t> tokens;
    v1::ExpertRequest request;
  };
  std::map<int, GroupWork> work;
  for (int64_t token = 0; token < batch.num_tokens; ++token) {
    for (int64_t slot = 0; slot < slots; ++slot) {
      const int32_t expert = batch.expert_ids[token * slots + slot];
      if (expert < 0) continue;
      if (expert >= num_experts_) return absl::InvalidArgumentError(absl::StrCat("expert id ", expert, " out of range"));
      GroupWork& group = work[group_of_expert[expert]];
      if (group.tokens.empty() || group.tokens.back() != token) {
        group.tokens.push_back(token);
        for (int64_t s = 0; s < slots; ++s) {
          group.request.add_expert_ids(-1);
          group.request.add_gate_weights(0.0f);
        }
      }
      const int64_t row = static_cast<int64_t>(group.tokens.size()) - 1;
      group.request.set_expert_ids(row * slots + slot, expert);
      group.request.set_gate_weights(row * slots + slot, batch.gate_weights[token * slots + slot]);
    }
  }

  struct InFlight {
    int group;
    size_t replica_attempt;
    std::future<absl::StatusOr<v1::ExpertReply>> reply;
  };
  std::vector<InFlight> in_flight;
  auto send = [&](int group_index, GroupWork& group, size_t attempt) -> bool {
    ShardGroup& shard_group = *groups_[group_index];
    const size_t replicas = shard_group.replicas.size();
    const uint32_t start = shard_group.next_replica.fetch_add(1);
    for (size_t tried = attempt; tried < replicas; ++tried) {
      ShardConnection* replica = shard_group.replicas[(start + tried) % replicas];
      if (!replica->healthy()) continue;
      in_flight.push_back({group_index, tried + 1, replica->Send(group.request)});
      return true;
    }
    return false;
  };
  auto unavailable = [&](int group_index, const std::string& last_error) {
    std::vector<std::string> replicas;
    for (auto* replica : groups_[group_index]->replicas) replicas.push_back(replica->address());
    return absl::UnavailableError(absl::StrCat("no healthy expert shard for layer ", batch.layer, " (replicas ",
                                               absl::StrJoin(replicas, ", "), ")",
                                               last_error.empty() ? "" : ": ", last_error));
  };

  std::vector<float> token_rows;
  for (auto& [group_index, group] : work) {
    const int64_t count = static_cast<int64_t>(group.tokens.size());
    token_rows.resize(count * hidden);
    for (int64_t row = 0; row < count; ++row) {
      std::copy_n(batch.activations.data() + group.tokens[row] * hidden, hidden, token_rows.data() + row * hidden);
    }
    group.request.set_layer(static_cast<uint32_t>(batch.layer));
    group.request.set_num_tokens(static_cast<uint32_t>(count));
    group.request.set_hidden_size(static_cast<uint32_t>(hidden));
    group.request.set_slots_per_token(static_cast<uint32_t>(slots));
    group.request.set_dtype(options_.wire_dtype);
    EXPERTMESH_RETURN_IF_ERROR(rpc::EncodeTensor(token_rows, options_.wire_dtype, group.request.mutable_activations()));
    if (!send(group_index, group, 0)) return unavailable(group_index, "");
  }

  const auto deadline = std::chrono::steady_clock::now() + options_.layer_timeout;
  std::vector<float> reply_rows;
  for (size_t i = 0; i < in_flight.size(); ++i) {
    if (in_flight[i].reply.wait_until(deadline) != std::future_status::ready) {
      return absl::DeadlineExceededError(absl::StrCat("expert round trip for layer ", batch.layer, " exceeded ",
                                                      options_.layer_timeout.count(), " ms"));
    }
    absl::StatusOr<v1::ExpertReply> reply = in_flight[i].reply.get();
    GroupWork& group = work[in_flight[i].group];
    if (!reply.ok()) {
      // A broken replica: fail over to the next healthy replica of the same group.
      if (reply.status().code() == absl::StatusCode::kUnavailable) {
        if (send(in_flight[i].group, group, in_flight[i].replica_attempt)) continue;
        return unavailable(in_flight[i].group, std::string(reply.status().message()));
      }
      return reply.status();
    }
    const int64_t count = static_cast<int64_t>(group.tokens.size());
    EXPERTMESH_RETURN_IF_ERROR(rpc::DecodeTensor(reply->outputs(), reply->dtype(), count * hidden, "expert reply", &reply_rows));
    for (int64_t row = 0; row < count; ++row) {
      float* destination = output.data() + group.tokens[row] * hidden;
      const float* source = reply_rows.data() + row * hidden;
      for (int64_t h = 0; h < hidden; ++h) destination[h] += source[h];
    }
  }
  return absl::OkStatus();
}

}  // namespace expertmesh::attention_service
