// TrafficSplit: the router's A/B split between weight sets — weights per name — and the pick for
// one request. With an ab_key the pick is weighted rendezvous hashing: every name scores
// w / -ln(u(key, name)) with u a stable hash of (key, name) in (0, 1), the highest score wins. So a
// key gets the same blend while the split is unchanged (on every router replica: the hash is
// fixed), each name wins with probability weight / sum, and changing one weight moves only the
// keys that must move. Without a key the u are random: a plain weighted draw.
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <string>

#include "absl/status/statusor.h"

namespace expertmesh::router_service {

class TrafficSplit {
 public:
  // Weights must be finite and >= 0 with at least one > 0, names non-empty (INVALID_ARGUMENT);
  // an empty map is the empty split.
  static absl::StatusOr<TrafficSplit> Create(std::map<std::string, double> weights);
  TrafficSplit() = default;

  bool empty() const { return weights_.empty(); }
  const std::map<std::string, double>& weights() const { return weights_; }
  // The weight of `name` (0 if absent).
  double weight(const std::string& name) const;

  // The name for a request; "" when the split is empty. `random` is used only without a key.
  std::string Pick(const std::string& ab_key, std::mt19937_64& random) const;

 private:
  explicit TrafficSplit(std::map<std::string, double> weights) : weights_(std::move(weights)) {}
  std::map<std::string, double> weights_;
};

// A stable 64-bit hash of (key, name) (FNV-1a, then the SplitMix64 finalizer).
uint64_t RendezvousHash(const std::string& key, const std::string& name);

}  // namespace expertmesh::router_service
