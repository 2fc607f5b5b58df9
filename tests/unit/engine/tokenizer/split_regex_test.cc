// The RE2 translation of pre-tokenizer regexes, including the emulated
// `\s+(?!\S)` lookahead, against Python's `regex` module on thousands of
// strings (see make_byte_level_fixture.py), plus unsupported constructs.
#include "engine/tokenizer/split_regex.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/tokenizer/tokenizer_test_util.h"

namespace tandem::tokenizer_internal {
namespace {

using Spans = std::vector<std::pair<size_t, size_t>>;

Spans Matches(const SplitRegex& re, std::string_view text) {
  Spans spans;
  re.FindMatches(text, &spans);
  return spans;
}

TEST(SplitRegexTest, MatchesPythonRegexModule) {
  const nlohmann::json all = testing::ReadJsonFile(testing::FixtureDir("byte_level") / "split_cases.json");
  ASSERT_FALSE(all.is_discarded()) << "missing fixture; run through ctest";
  ASSERT_EQ(all.size(), 4u);
  for (const auto& set : all) {
    const std::string name = set["name"];
    auto re = SplitRegex::Create(set["pattern"].get<std::string>());
    ASSERT_TRUE(re.ok()) << name << ": " << re.status();
    int mismatches = 0;
    for (const auto& c : set["cases"]) {
      const std::string text = c["text"];
      Spans want;
      for (const auto& s : c["spans"]) want.emplace_back(s[0].get<size_t>(), s[1].get<size_t>());
      const Spans got = Matches(**re, text);
      if (got != want && ++mismatches <= 10) {
        ADD_FAILURE() << name << " on '" << text << "': got " << ::testing::PrintToString(got) << " want "
                      << ::testing::PrintToString(want);
      }
    }
    EXPECT_EQ(mismatches, 0) << name;
  }
}

TEST(SplitRegexTest, LookaheadGivesBackLastSpace) {
  auto re = SplitRegex::Create(R"( ?\p{L}+|\s+(?!\S)|\s+)");
  ASSERT_TRUE(re.ok()) << re.status();
  // "a   b": the run of 3 spaces before "b" splits as "  " + " b".
  EXPECT_EQ(Matches(**re, "a   b"), (Spans{{0, 1}, {1, 3}, {3, 5}}));
  // A single space before a letter belongs to the letter.
  EXPECT_EQ(Matches(**re, "a b"), (Spans{{0, 1}, {1, 3}}));
  // Trailing spaces stay together.
  EXPECT_EQ(Matches(**re, "a   "), (Spans{{0, 1}, {1, 4}}));
  // A multi-byte space (U+3000) is given back as a whole character.
  EXPECT_EQ(Matches(**re,
                    "a \xE3\x80\x80"
                    "b"),
            (Spans{{0, 1}, {1, 2}, {2, 5}, {5, 6}}));
}

TEST(SplitRegexTest, TranslatesClassesAndPossessives) {
  bool lookahead = false;
  auto out = TranslatePattern(R"(\p{N}{1,3}+|[^\s\p{L}]++|(x)|\s+(?!\S))", &lookahead);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(lookahead);
  EXPECT_THAT(*out, ::testing::Not(::testing::HasSubstr("++")));
  EXPECT_THAT(*out, ::testing::HasSubstr("(?:x)"));
  EXPECT_THAT(*out, ::testing::HasSubstr("\\x{3000}"));
}

TEST(SplitRegexTest, RejectsUnsupportedConstructs) {
  for (const char* pattern : {"(?<=a)b", "(?<!a)b", "a(?=b)", "(a)\\1", "(?>ab)", "x\\s+(?!\\S)", "[\\S]"}) {
    auto re = SplitRegex::Create(pattern);
    EXPECT_EQ(re.status().code(), absl::StatusCode::kInvalidArgument) << pattern;
    EXPECT_THAT(std::string(re.status().message()), ::testing::HasSubstr(pattern)) << pattern;
  }
}

TEST(SplitRegexTest, LiteralPattern) {
  auto re = SplitRegex::CreateLiteral("\xE2\x96\x81");
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(Matches(**re,
                    "a\xE2\x96\x81"
                    "b.*"),
            (Spans{{1, 4}}));
}

}  // namespace
}  // namespace tandem::tokenizer_internal
