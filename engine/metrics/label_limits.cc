// BoundedLabelValues: first-come admission of label values up to a fixed count.
#include "engine/metrics/label_limits.h"

namespace expertmesh::metrics {

std::string BoundedLabelValues::Admit(std::string_view value, std::string_view empty_replacement) {
  if (value.empty()) value = empty_replacement;
  std::lock_guard<std::mutex> lock(mutex_);
  std::string key(value);
  if (admitted_.count(key) > 0) return key;
  if (static_cast<int>(admitted_.size()) >= max_values_) return std::string(kOtherLabelValue);
  admitted_.insert(key);
  return key;
}

int BoundedLabelValues::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(admitted_.size());
}

}  // namespace expertmesh::metrics
