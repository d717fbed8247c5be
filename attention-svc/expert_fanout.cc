// Placement table, concurrent per-layer fan-out, replica balancing and failover.
#include "attention-svc/expert_fanout.h"

#include <netdb.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <algorithm>
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

template <typename Group>
std::vector<std::string> ReplicaAddresses(const Group& group) {
  std::vector<std::string> addresses;
  for (const auto* replica : group.replicas) addresses.push_back(replica->address());
  return addresses;
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
    if (options.metrics) {
      connection->set_round_trip_observer(
          [metrics = options.metrics, shard = static_cast<int>(fanout->connections_.size())](
              double seconds, uint64_t bytes_sent, uint64_t bytes_received) {
            metrics->RecordShardRoundTrip(shard, seconds, bytes_sent, bytes_received);
          });
    }
    fanout->connections_.push_back(std::move(connection));
  }
  EXPERTMESH_RETURN_IF_ERROR(fanout->BuildPlacement(config));
  EXPERTMESH_RETURN_IF_ERROR(fanout->CheckWeightSets());
  std::vector<v1::ExpertShardDescription> descriptions;
  for (const auto& connection : fanout->connections_) descriptions.push_back(connection->description());
  fanout->directory_ = std::make_unique<WeightSetDirectory>(addresses, descriptions);
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
  // Another replica of `connection`'s shard group is healthy (its traffic can move there).
  auto has_healthy_peer = [this](const ShardConnection* connection) {
    for (const auto& group : groups_) {
      if (std::find(group->replicas.begin(), group->replicas.end(), connection) == group->replicas.end()) continue;
      for (const ShardConnection* replica : group->replicas) {
        if (replica != connection && replica->healthy()) return true;
      }
    }
    return false;
  };
  std::vector<bool> was_healthy(connections_.size(), true);
  while (!stopping_) {
    for (size_t index = 0; index < connections_.size(); ++index) {
      ShardConnection* connection = connections_[index].get();
      if (stopping_) return;
      const bool healthy = connection->healthy();
      // One failover per replica failure whose traffic moved to another replica (the requests it
      // had in flight are retried there by Gather).
      if (!healthy && was_healthy[index] && options_.metrics && has_healthy_peer(connection)) {
        options_.metrics->RecordShardFailover(static_cast<int>(index));
      }
      was_healthy[index] = healthy;
      if (!healthy) {
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

absl::Status ExpertFanout::CheckWeightSets() {
  std::vector<std::string> seen;
  for (const auto& connection : connections_) {
    const v1::WeightSetInfo* default_set = nullptr;
    for (const auto& weight_set : connection->description().weight_sets()) {
      if (weight_set.is_default()) default_set = &weight_set;
    }
    if (default_set == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("expert shard ", connection->address(),
                                                        " reports no default weight set"));
    }
    seen.push_back(absl::StrCat(connection->address(), ": ", default_set->name(), " v", default_set->version()));
    if (connection == connections_.front()) {
      default_weight_set_ = *default_set;
    } else if (default_set->name() != default_weight_set_.name() ||
               default_set->version() != default_weight_set_.version()) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert shards serve different default weight sets (", absl::StrJoin(seen, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

int ExpertFanout::num_unreachable_groups() const {
  int unreachable = 0;
  for (const auto& group : groups_) {
    bool any = false;
    for (const ShardConnection* replica : group->replicas) any |= replica->healthy();
    unreachable += !any;
  }
  return unreachable;
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

struct ExpertFanout::GroupCall {
  int group = 0;                // index into groups_
  std::vector<int64_t> tokens;  // batch rows this group serves, ascending
  v1::ExpertRequest request;
  std::vector<bool> tried;      // per replica of the group
  ShardConnection* replica = nullptr;
  std::future<absl::StatusOr<v1::ExpertReply>> reply;
};

struct ExpertFanout::Call {
  RoutedExpertBatch batch;
  std::span<float> output;
  std::chrono::steady_clock::time_point deadline;
  std::chrono::steady_clock::time_point started;
  std::vector<GroupCall> groups;  // ascending group index
  WeightSetRef weight_set;  // sent with every request; "" / 0 = the shards' default
};

// The fan-out pinned to one weight set and version.
class ExpertFanout::PinnedExperts final : public RoutedExperts {
 public:
  PinnedExperts(ExpertFanout* fanout, WeightSetRef weight_set) : fanout_(fanout), weight_set_(std::move(weight_set)) {}
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override {
    return ComputeAsync(batch, output).get();
  }
  std::future<absl::Status> ComputeAsync(const RoutedExpertBatch& batch, std::span<float> output) override {
    return fanout_->ComputeAsyncFor(weight_set_, batch, output);
  }

 private:
  ExpertFanout* fanout_;
  const WeightSetRef weight_set_;
};

std::shared_ptr<RoutedExperts> ExpertFanout::Pinned(const std::string& name, uint64_t version) const {
  std::lock_guard<std::mutex> lock(pinned_mutex_);
  std::weak_ptr<RoutedExperts>& slot = pinned_[{name, version}];
  std::shared_ptr<RoutedExperts> experts = slot.lock();
  if (!experts) {
    experts = std::make_shared<PinnedExperts>(const_cast<ExpertFanout*>(this), WeightSetRef{name, version});
    slot = experts;
  }
  // Forget pins nobody holds any more.
  std::erase_if(pinned_, [](const auto& item) { return item.second.expired(); });
  return experts;
}

absl::StatusOr<WeightSetRef> ExpertFanout::ResolveWeightSet(const std::string& blend) const {
  return directory_->Resolve(blend);
}

absl::Status ExpertFanout::Compute(const RoutedExpertBatch& batch, std::span<float> output) {
  return ComputeAsync(batch, output).get();
}

std::future<absl::Status> ExpertFanout::ComputeAsync(const RoutedExpertBatch& batch, std::span<float> output) {
  return ComputeAsyncFor(WeightSetRef{}, batch, output);
}

std::future<absl::Status> ExpertFanout::ComputeAsyncFor(const WeightSetRef& weight_set, const RoutedExpertBatch& batch,
                                                        std::span<float> output) {
  auto call = std::make_shared<Call>();
  call->weight_set = weight_set;
  call->batch = batch;
  call->output = output;
  call->started = std::chrono::steady_clock::now();
  call->deadline = std::min(batch.deadline, std::chrono::steady_clock::now() + options_.layer_timeout);
  if (absl::Status started = Start(*call); !started.ok()) {
    std::promise<absl::Status> failed;
    failed.set_value(started);
    return failed.get_future();
  }
  // Replies arrive on the connections' reader threads; the gather runs when the caller waits.
  return std::async(std::launch::deferred, [this, call] { return Gather(*call); });
}

bool ExpertFanout::SendToNextReplica(Call& call, GroupCall& group) {
  ShardGroup& shard_group = *groups_[group.group];
  const size_t replicas = shard_group.replicas.size();
  const uint32_t start = shard_group.next_replica.fetch_add(1);
  for (size_t offset = 0; offset < replicas; ++offset) {
    const size_t index = (start + offset) % replicas;
    ShardConnection* replica = shard_group.replicas[index];
    if (group.tried[index] || !replica->healthy()) continue;
    group.tried[index] = true;
    const auto remaining = std::chrono::duration_cast<std::chrono::microseconds>(
        call.deadline - std::chrono::steady_clock::now());
    group.request.set_timeout_micros(static_cast<uint64_t>(std::max<int64_t>(remaining.count(), 1)));
    group.replica = replica;
    group.reply = replica->Send(group.request);
    return true;
  }
  return false;
}

absl::Status ExpertFanout::Start(Call& call) {
  const RoutedExpertBatch& batch = call.batch;
  if (batch.layer < 0 || batch.layer >= static_cast<int64_t>(group_of_expert_.size()) ||
      group_of_expert_[batch.layer].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", batch.layer, " is not an MoE layer"));
  }
  const int64_t hidden = batch.hidden_size;
  const int64_t slots = batch.top_k;
  if (slots < 1 || static_cast<int64_t>(batch.activations.size()) != batch.num_tokens * hidden ||
      static_cast<int64_t>(batch.expert_ids.size()) != batch.num_tokens * slots ||
      static_cast<int64_t>(batch.gate_weights.size()) != batch.num_tokens * slots ||
      static_cast<int64_t>(call.output.size()) != batch.num_tokens * hidden) {
    return absl::InvalidArgumentError("expert batch sizes are inconsistent");
  }
  const auto& group_of_expert = group_of_expert_[batch.layer];

  // Per group: the tokens it serves and, per token, its slots (other groups' slots are -1).
  std::map<int, GroupCall> work;
  for (int64_t token = 0; token < batch.num_tokens; ++token) {
    for (int64_t slot = 0; slot < slots; ++slot) {
      const int32_t expert = batch.expert_ids[token * slots + slot];
      if (expert < 0) continue;
      if (expert >= num_experts_) return absl::InvalidArgumentError(absl::StrCat("expert id ", expert, " out of range"));
      const int group_index = group_of_expert[expert];
      GroupCall& group = work[group_index];
      group.group = group_index;
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
    group.request.set_weight_set(call.weight_set.name);
    group.request.set_weight_set_version(call.weight_set.version);
    EXPERTMESH_RETURN_IF_ERROR(rpc::EncodeTensor(token_rows, options_.wire_dtype, group.request.mutable_activations()));
    group.tried.assign(groups_[group_index]->replicas.size(), false);
    call.groups.push_back(std::move(group));
  }
  for (GroupCall& group : call.groups) {
    if (!SendToNextReplica(call, group)) {
      return absl::UnavailableError(absl::StrCat("no healthy expert shard for layer ", batch.layer, " (replicas ",
                                                 absl::StrJoin(ReplicaAddresses(*groups_[group.group]), ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ExpertFanout::Gather(Call& call) {
  const int64_t hidden = call.batch.hidden_size;
  std::vector<float> reply_rows;
  for (GroupCall& group : call.groups) {
    absl::StatusOr<v1::ExpertReply> reply;
    while (true) {
      if (group.reply.wait_until(call.deadline) != std::future_status::ready) {
        return absl::DeadlineExceededError(absl::StrCat("expert shard ", group.replica->address(),
                                                        " did not answer layer ", call.batch.layer,
                                                        " within the deadline"));
      }
      reply = group.reply.get();
      // A broken replica (or one that is shutting down): fail over to the next healthy replica.
      if (reply.ok() || reply.status().code() != absl::StatusCode::kUnavailable) break;
      if (!SendToNextReplica(call, group)) {
        return absl::UnavailableError(absl::StrCat("no healthy expert shard left for layer ", call.batch.layer, ": ",
                                                   reply.status().message()));
      }
    }
    if (!reply.ok()) return reply.status();
    if (call.weight_set.version != 0 && (reply->weight_set() != call.weight_set.name ||
                                         reply->weight_set_version() != call.weight_set.version)) {
      return absl::InternalError(absl::StrCat("expert shard ", group.replica->address(), " computed layer ",
                                              call.batch.layer, " with '", reply->weight_set(), "' v",
                                              reply->weight_set_version(), " for a sequence pinned to '",
                                              call.weight_set.name, "' v", call.weight_set.version));
    }
    const int64_t count = static_cast<int64_t>(group.tokens.size());
    EXPERTMESH_RETURN_IF_ERROR(
        rpc::DecodeTensor(reply->outputs(), reply->dtype(), count * hidden, "expert reply", &reply_rows));
    for (int64_t row = 0; row < count; ++row) {
      float* destination = call.output.data() + group.tokens[row] * hidden;
      const float* source = reply_rows.data() + row * hidden;
      for (int64_t h = 0; h < hidden; ++h) destination[h] += source[h];
    }
  }
  if (options_.metrics) {
    options_.metrics->RecordLayerFanout(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - call.started).count());
  }
  return absl::OkStatus();
}

}  // namespace expertmesh::attention_service
