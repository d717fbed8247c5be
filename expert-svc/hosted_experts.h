// HostedExperts: which routed experts one expert shard hosts, per MoE layer (layer -> expert ids).
// Every weight set of the shard holds exactly these experts.
#pragma once

#include <cstdint>
#include <map>
#include <set>

namespace expertmesh::expert_service {

using HostedExperts = std::map<int64_t, std::set<int32_t>>;

}  // namespace expertmesh::expert_service
