// Stop strings across token boundaries: nothing after (or of) a stop string is ever sent.
#include "router-svc/stop_matcher.h"

#include <gtest/gtest.h>

namespace expertmesh::router_service {
namespace {

TEST(StopMatcherTest, HoldsBackPossiblePrefixesAndCutsAtTheStop) {
  StopMatcher matcher({"\n\n", "END"});
  EXPECT_EQ(matcher.Append("Hello"), "Hello");
  EXPECT_EQ(matcher.Append(" E"), " ");   // "E" could start "END"
  EXPECT_EQ(matcher.Append("ar"), "Ear");  // it did not
  EXPECT_EQ(matcher.Append("th\n"), "th");
  EXPECT_EQ(matcher.Append("\nmore"), "");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.Append("ignored"), "");
}

TEST(StopMatcherTest, StopInsideOneChunkAndFlush) {
  StopMatcher matcher({"stop"});
  EXPECT_EQ(matcher.Append("a stop b"), "a ");
  EXPECT_TRUE(matcher.stopped());
  StopMatcher open({"xyz"});
  EXPECT_EQ(open.Append("abcxy"), "abc");
  EXPECT_EQ(open.Flush(), "xy");
  StopMatcher none({});
  EXPECT_EQ(none.Append("text"), "text");
}

}  // namespace
}  // namespace expertmesh::router_service
