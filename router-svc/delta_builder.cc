// UTF-8-safe, stop-string-aware token deltas.
#include "router-svc/delta_builder.h"

namespace expertmesh::router_service {

DeltaBuilder::DeltaBuilder(const Tokenizer& tokenizer, std::vector<std::string> stop_strings)
    : decoder_(tokenizer), stop_matcher_(std::move(stop_strings)) {}

v1::TokenDelta DeltaBuilder::Add(int32_t token_id) {
  v1::TokenDelta delta;
  if (stopped()) return delta;
  ++tokens_added_;
  delta.add_token_ids(token_id);
  delta.set_text(stop_matcher_.Append(decoder_.Add(token_id)));
  return delta;
}

v1::TokenDelta DeltaBuilder::Finish() {
  v1::TokenDelta delta;
  if (stopped()) return delta;
  std::string text = stop_matcher_.Append(decoder_.Finish());
  if (!stopped()) text += stop_matcher_.Flush();
  delta.set_text(std::move(text));
  return delta;
}

}  // namespace expertmesh::router_service
