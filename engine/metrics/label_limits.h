// Bounds on label values: a BoundedLabelValues admits the first N distinct values of a label and
// maps every later one to "other", so a client sending made-up blend names cannot grow the
// number of series without limit. The numeric limits documented in docs/metrics.md live here.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

namespace expertmesh::metrics {

inline constexpr int kMaxBlendLabelValues = 16;
inline constexpr int kMaxShardLabelValues = 256;
inline constexpr int kMaxMoeLayers = 128;
inline constexpr int kMaxRoutedExperts = 512;
inline constexpr int kMaxDevices = 16;
inline constexpr std::string_view kOtherLabelValue = "other";
// Label value used for requests served without naming a blend (the default weight set).
inline constexpr std::string_view kDefaultBlendLabelValue = "default";

class BoundedLabelValues {
 public:
  explicit BoundedLabelValues(int max_values) : max_values_(max_values) {}

  // `value` if it was admitted before or there is room; kOtherLabelValue otherwise. Empty values
  // become `empty_replacement`. Thread-safe.
  std::string Admit(std::string_view value, std::string_view empty_replacement = kDefaultBlendLabelValue);
  int size() const;

 private:
  const int max_values_;
  mutable std::mutex mutex_;
  std::unordered_set<std::string> admitted_;
};

}  // namespace expertmesh::metrics
