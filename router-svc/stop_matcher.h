// StopMatcher: finds the first stop string in streamed text without emitting text that might
// turn out to be the start of a stop string: Append() returns the text that is safe to send now.
#pragma once

#include <string>
#include <vector>

namespace expertmesh::router_service {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stop_strings);

  // Adds generated text; returns what may be sent now. After a stop string is found, returns
  // the text before it and stopped() becomes true.
  std::string Append(const std::string& text);
  // At the end of generation: whatever was held back.
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stop_strings_;
  std::string held_;  // text not yet sent (could begin a stop string)
  bool stopped_ = false;
};

}  // namespace expertmesh::router_service
