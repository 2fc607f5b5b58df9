#include "engine/tokenizer/stop_strings.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

// Feeds `pieces` one by one; returns everything emitted (Feed + Flush).
std::string FeedAll(StopStringMatcher& m, const std::vector<std::string>& pieces,
                std::vector<std::string>* emitted = nullptr) {
  std::string all;
  for (const std::string& p : pieces) {
    std::string out = m.Feed(p);
    if (emitted) emitted->push_back(out);
    all += out;
  }
  return all + m.Flush();
}

TEST(StopStringMatcherTest, StopsAcrossPieceBoundariesAndDropsTheStopString) {
  StopStringMatcher m({"\n\n"});
  EXPECT_EQ(FeedAll(m, {"Hello", " world\n", "\nmore text"}), "Hello world");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "\n\n");
}

TEST(StopStringMatcherTest, HoldsBackOnlyAPossibleStopPrefix) {
  StopStringMatcher m({"END"});
  std::vector<std::string> emitted;
  EXPECT_EQ(FeedAll(m, {"the E", "N", "ding", " is near"}, &emitted), "the ENding is near");
  EXPECT_FALSE(m.stopped());
  // "the E": "E" might start "END" -> held; "N": "EN" held; "ding": released.
  ASSERT_EQ(emitted.size(), 4u);
  EXPECT_EQ(emitted[0], "the ");
  EXPECT_EQ(emitted[1], "");
  EXPECT_EQ(emitted[2], "ENding");
  EXPECT_EQ(emitted[3], " is near");
}

TEST(StopStringMatcherTest, EarliestOfSeveralStopsWins) {
  StopStringMatcher m({"world", "lo w"});
  EXPECT_EQ(FeedAll(m, {"hello world"}), "hel");
  EXPECT_EQ(m.matched(), "lo w");
}

TEST(StopStringMatcherTest, StopInsideOnePieceKeepsTextBefore) {
  StopStringMatcher m({"STOP"});
  EXPECT_EQ(FeedAll(m, {"abcSTOPdef", "ignored"}), "abc");
}

TEST(StopStringMatcherTest, MultiByteStopStrings) {
  StopStringMatcher m({"é!"});
  EXPECT_EQ(FeedAll(m, {"café", "!", " après"}), "caf");
}

TEST(StopStringMatcherTest, NoStopsPassesEverythingThrough) {
  StopStringMatcher m({});
  std::vector<std::string> emitted;
  EXPECT_EQ(FeedAll(m, {"a", "b"}, &emitted), "ab");
  EXPECT_EQ(emitted[0], "a");
}

}  // namespace
}  // namespace tandem
