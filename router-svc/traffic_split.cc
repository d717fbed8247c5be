// Weighted rendezvous hashing over the split's names.
#include "router-svc/traffic_split.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace expertmesh::router_service {

uint64_t RendezvousHash(const std::string& key, const std::string& name) {
  uint64_t hash = 1469598103934665603ull;
  auto mix = [&](unsigned char byte) {
    hash ^= byte;
    hash *= 1099511628211ull;
  };
  for (unsigned char c : key) mix(c);
  mix(0xff);  // separator: ("ab", "c") and ("a", "bc") differ
  for (unsigned char c : name) mix(c);
  hash += 0x9e3779b97f4a7c15ull;
  hash = (hash ^ (hash >> 30)) * 0xbf58476d1ce4e5b9ull;
  hash = (hash ^ (hash >> 27)) * 0x94d049bb133111ebull;
  return hash ^ (hash >> 31);
}

absl::StatusOr<TrafficSplit> TrafficSplit::Create(std::map<std::string, double> weights) {
  double total = 0;
  for (const auto& [name, weight] : weights) {
    if (name.empty()) return absl::InvalidArgumentError("traffic split: a weight set name is empty");
    if (!std::isfinite(weight) || weight < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("traffic split: weight of '", name, "' must be finite and >= 0, got ", weight));
    }
    total += weight;
  }
  if (!weights.empty() && !(total > 0)) {
    return absl::InvalidArgumentError("traffic split: at least one weight must be > 0 (or send no weights to clear it)");
  }
  std::erase_if(weights, [](const auto& item) { return item.second == 0; });
  return TrafficSplit(std::move(weights));
}

double TrafficSplit::weight(const std::string& name) const {
  auto found = weights_.find(name);
  return found == weights_.end() ? 0.0 : found->second;
}

std::string TrafficSplit::Pick(const std::string& ab_key, std::mt19937_64& random) const {
  std::string best;
  double best_score = -1;
  for (const auto& [name, weight] : weights_) {
    const uint64_t bits = ab_key.empty() ? random() : RendezvousHash(ab_key, name);
    // u in (0, 1): the top 53 bits, offset by half a step so it is never 0 or 1.
    const double u = (static_cast<double>(bits >> 11) + 0.5) / 9007199254740992.0;
    const double score = weight / -std::log(u);
    if (score > best_score) {
      best_score = score;
      best = name;
    }
  }
  return best;
}

}  // namespace expertmesh::router_service
