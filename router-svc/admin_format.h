// Text rendering of admin API answers for expertmesh-admin: fleet and shard weight-set tables
// (versions, states, progress, memory: referenced / unique / shared), traffic splits.
#pragma once

#include <string>

#include "expertmesh/v1/admin_service.pb.h"

namespace expertmesh::admin_cli {

std::string FormatBytes(uint64_t bytes);  // "4.7 MB"
std::string FormatFleet(const v1::FleetWeightSets& fleet);
std::string FormatShard(const v1::ListWeightSetsResponse& shard);
std::string FormatFleetWeightSet(const v1::FleetWeightSet& weight_set);
std::string FormatWeightSet(const v1::WeightSetStatus& status);
std::string FormatSplit(const v1::TrafficSplit& split);
// One line per set being loaded or merged on `shard` ("" if none), for progress output.
std::string FormatBuilds(const v1::ListWeightSetsResponse& shard);

}  // namespace expertmesh::admin_cli
