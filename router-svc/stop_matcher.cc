// Streaming stop-string detection.
#include "router-svc/stop_matcher.h"

#include <algorithm>

namespace expertmesh::router_service {

StopMatcher::StopMatcher(std::vector<std::string> stop_strings) {
  for (auto& stop : stop_strings) {
    if (!stop.empty()) stop_strings_.push_back(std::move(stop));
  }
}

std::string StopMatcher::Append(const std::string& text) {
  if (stopped_) return "";
  held_ += text;
  size_t first_stop = std::string::npos;
  for (const auto& stop : stop_strings_) first_stop = std::min(first_stop, held_.find(stop));
  if (first_stop != std::string::npos) {
    stopped_ = true;
    std::string before = held_.substr(0, first_stop);
    held_.clear();
    return before;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& stop : stop_strings_) {
    for (size_t length = std::min(stop.size() - 1, held_.size()); length > hold; --length) {
      if (held_.compare(held_.size() - length, length, stop, 0, length) == 0) {
        hold = length;
        break;
      }
    }
  }
  std::string ready = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return ready;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  std::string rest;
  rest.swap(held_);
  return rest;
}

}  // namespace expertmesh::router_service
