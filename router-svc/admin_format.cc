// expertmesh-admin's tables.
#include "router-svc/admin_format.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace expertmesh::admin_cli {
namespace {

std::string StateName(v1::WeightSetState state) {
  std::string name = v1::WeightSetState_Name(state);
  const std::string prefix = "WEIGHT_SET_STATE_";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return absl::AsciiStrToLower(name);
}

std::string KindName(v1::WeightSetKind kind) {
  return kind == v1::WEIGHT_SET_KIND_BLEND ? "blend" : kind == v1::WEIGHT_SET_KIND_PARENT ? "parent" : "?";
}

}  // namespace

std::string FormatBytes(uint64_t bytes) { return absl::StrFormat("%.1f MB", static_cast<double>(bytes) / 1e6); }

std::string FormatWeightSet(const v1::WeightSetStatus& s) {
  std::string line = absl::StrFormat("%-16s v%-3d %-6s %-9s %-7s %10s %10s %10s %3d", s.name(), s.version(),
                                     KindName(s.kind()), StateName(s.state()), s.is_default() ? "default" : "",
                                     FormatBytes(s.referenced_bytes()), FormatBytes(s.unique_bytes()),
                                     FormatBytes(s.shared_bytes()), s.requests_in_flight());
  if (s.state() == v1::WEIGHT_SET_STATE_LOADING || s.state() == v1::WEIGHT_SET_STATE_MERGING) {
    absl::StrAppend(&line, "  ", s.progress().message());
  } else if (s.kind() == v1::WEIGHT_SET_KIND_BLEND) {
    absl::StrAppend(&line, "  base ", s.base_parent(), ": ", s.progress().merged(), " merged, ",
                    s.progress().shared_with_base(), " shared");
  }
  return line;
}

std::string FormatShard(const v1::ListWeightSetsResponse& shard) {
  std::string text = absl::StrCat("shard ", shard.shard(), ": default '", shard.default_weight_set(), "', resident ",
                                  FormatBytes(shard.resident_bytes()),
                                  shard.budget_bytes() ? absl::StrCat(" of ", FormatBytes(shard.budget_bytes())) : "",
                                  "\n");
  absl::StrAppend(&text, absl::StrFormat("  %-16s %-4s %-6s %-9s %-7s %10s %10s %10s %3s\n", "NAME", "VER", "KIND",
                                         "STATE", "", "REFERENCED", "UNIQUE", "SHARED", "RUN"));
  for (const auto& status : shard.weight_sets()) absl::StrAppend(&text, "  ", FormatWeightSet(status), "\n");
  return text;
}

std::string FormatFleetWeightSet(const v1::FleetWeightSet& w) {
  std::vector<std::string> retiring;
  for (uint64_t version : w.retiring_versions()) retiring.push_back(absl::StrCat("v", version));
  std::string line = absl::StrFormat("%-16s v%-3d %-6s %-7s split %-5g in-flight %-3d", w.name(), w.version(),
                                     KindName(w.kind()), w.is_default() ? "default" : "", w.split_weight(),
                                     w.requests_in_flight());
  if (!retiring.empty()) absl::StrAppend(&line, " retiring ", absl::StrJoin(retiring, ","));
  for (const auto& shard : w.shards()) {
    absl::StrAppend(&line, "\n    ", shard.address(), ": ", StateName(shard.status().state()), ", ",
                    FormatBytes(shard.status().referenced_bytes()), " referenced, ",
                    FormatBytes(shard.status().unique_bytes()), " own, ", FormatBytes(shard.status().shared_bytes()),
                    " shared");
  }
  return line;
}

std::string FormatFleet(const v1::FleetWeightSets& fleet) {
  std::string text = absl::StrCat("fleet: default '", fleet.default_weight_set(), "', ", fleet.shards_size(),
                                  " shard(s)\n");
  for (const auto& weight_set : fleet.weight_sets()) absl::StrAppend(&text, "  ", FormatFleetWeightSet(weight_set), "\n");
  for (const auto& shard : fleet.shards()) absl::StrAppend(&text, FormatShard(shard));
  return text;
}

std::string FormatSplit(const v1::TrafficSplit& split) {
  if (split.weights().empty()) return absl::StrCat("traffic split (generation ", split.generation(), "): none (default serves)\n");
  double total = 0;
  for (const auto& [name, weight] : split.weights()) total += weight;
  std::map<std::string, double> sorted(split.weights().begin(), split.weights().end());
  std::string text = absl::StrCat("traffic split (generation ", split.generation(), "):\n");
  for (const auto& [name, weight] : sorted) {
    absl::StrAppend(&text, absl::StrFormat("  %-16s weight %-6g (%.1f%%)\n", name, weight, 100.0 * weight / total));
  }
  return text;
}

std::string FormatBuilds(const v1::ListWeightSetsResponse& shard) {
  std::string text;
  for (const auto& status : shard.weight_sets()) {
    if (status.state() == v1::WEIGHT_SET_STATE_LOADING || status.state() == v1::WEIGHT_SET_STATE_MERGING) {
      absl::StrAppend(&text, "  ", shard.shard(), ": '", status.name(), "' v", status.version(), " ",
                      status.progress().message(), "\n");
    }
  }
  return text;
}

}  // namespace expertmesh::admin_cli
