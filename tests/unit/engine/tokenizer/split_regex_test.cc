// The tokenizer's regexes on Oniguruma: the pre-tokenizer patterns (with the
// `\s+(?!\S)` lookahead) against Python's `regex` module on thousands of
// strings (see make_byte_level_fixture.py), Oniguruma's own constructs and
// class meanings, patterns that do not compile, invalid UTF-8, and the
// backtracking / stack limits on hostile input.
#include "engine/tokenizer/split_regex.h"

#include <string>
#include <thread>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/tokenizer/tokenizer_test_util.h"

namespace tandem::tokenizer_internal {
namespace {

using Spans = std::vector<std::pair<size_t, size_t>>;

Spans Matches(const SplitRegex& re, std::string_view text) {
  Spans spans;
  const absl::Status status = re.FindMatches(text, &spans);
  EXPECT_TRUE(status.ok()) << status;
  return spans;
}

constexpr char kGpt2[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr char kLlama3[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*)"
    R"(|\s*[\r\n]+|\s+(?!\S)|\s+)";

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

// What the RE2 emulation could not run, Oniguruma runs natively.
TEST(SplitRegexTest, RunsLookaroundBackreferencesAndAtomicGroups) {
  const struct {
    const char* pattern;
    const char* text;
    Spans want;
  } kCases[] = {
      {"(?<=a)b", "abcb", {{1, 2}}},
      {"(?<!a)b", "abcb", {{3, 4}}},
      {"a(?=b)", "acab", {{2, 3}}},
      {"(a)\\1", "aaa", {{0, 2}}},
      {"(?>a+)b", "aab", {{0, 3}}},
      {"\\p{N}++", "12345", {{0, 5}}},
      // In Oniguruma's syntax (HF's) `{n,m}+` repeats the interval; it is not
      // possessive as in Perl or Python's `regex`.
      {"\\p{N}{1,3}+", "12345", {{0, 5}}},
      {"[^\\s\\p{L}]++", "a!? b", {{1, 3}}},
      {"(?i:'s)", "'S'\xC5\xBF", {{0, 2}, {2, 5}}},  // case folding takes U+017F LONG S
  };
  for (const auto& c : kCases) {
    auto re = SplitRegex::Create(c.pattern);
    ASSERT_TRUE(re.ok()) << c.pattern << ": " << re.status();
    EXPECT_EQ(Matches(**re, c.text), c.want) << c.pattern;
  }
}

// Oniguruma's class meanings (those of HF tokenizers): \s is Unicode
// White_Space, \w takes marks, \d only decimal digits.
TEST(SplitRegexTest, ClassesAreOniguruma) {
  auto space = SplitRegex::Create("\\s");
  ASSERT_TRUE(space.ok());
  EXPECT_EQ(Matches(**space, "\xC2\x85|\xE3\x80\x80|\xE1\xA0\x8E"), (Spans{{0, 2}, {3, 6}}));  // not U+180E
  auto word = SplitRegex::Create("\\w+");
  ASSERT_TRUE(word.ok());
  EXPECT_EQ(Matches(**word, "e\xCC\x81_1 x"), (Spans{{0, 5}, {6, 7}}));  // e + U+0301, '_', '1'
  auto digit = SplitRegex::Create("\\d+");
  ASSERT_TRUE(digit.ok());
  EXPECT_EQ(Matches(**digit, "\xD9\xA3\xC2\xBD"
                                   "7"), (Spans{{0, 2}, {4, 5}}));  // U+0663 yes, U+00BD no
}

TEST(SplitRegexTest, RejectsPatternsThatDoNotCompile) {
  for (const char* pattern : {"(ab", "ab)", "[z-a]", "[abc", "*a", "\\", "(?<name>a)\\k<other>"}) {
    auto re = SplitRegex::Create(pattern);
    EXPECT_EQ(re.status().code(), absl::StatusCode::kInvalidArgument) << pattern;
    EXPECT_THAT(std::string(re.status().message()), ::testing::HasSubstr(pattern)) << pattern;
  }
  auto bad_utf8 = SplitRegex::Create("a\xFF");
  EXPECT_EQ(bad_utf8.status().code(), absl::StatusCode::kInvalidArgument);
}

// Ill-formed bytes match as U+FFFD would (a symbol: GPT-2's punctuation
// alternative), one per maximal subpart, in the caller's byte offsets.
TEST(SplitRegexTest, InvalidUtf8MatchesAsReplacementCharacter) {
  auto re = SplitRegex::Create(kGpt2);
  ASSERT_TRUE(re.ok()) << re.status();
  // "a", " \xFF\xE2\x82" (two subparts: FF, E2 82), "b", " \x80"
  EXPECT_EQ(Matches(**re, "a \xFF\xE2\x82"
                          "b \x80"),
            (Spans{{0, 1}, {1, 5}, {5, 6}, {6, 8}}));
  auto out = (*re)->ReplaceAll("\xC3x", "-");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "--");
}

TEST(SplitRegexTest, ReplaceAllIsLiteral) {
  auto re = SplitRegex::Create(" {2,}");
  ASSERT_TRUE(re.ok());
  auto out = (*re)->ReplaceAll("a    b  c d", "\\1$0");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "a\\1$0b\\1$0c d");
}

// Long runs within the limits split as they should, in one match each.
TEST(SplitRegexTest, LongRunsWithinTheLimits) {
  auto gpt2 = SplitRegex::Create(kGpt2);
  auto llama3 = SplitRegex::Create(kLlama3);
  ASSERT_TRUE(gpt2.ok() && llama3.ok());
  const size_t n = 512 * 1024;
  const std::string spaces = std::string(n, ' ') + "x";
  EXPECT_EQ(Matches(**gpt2, spaces), (Spans{{0, n - 1}, {n - 1, n + 1}}));
  EXPECT_EQ(Matches(**llama3, spaces), (Spans{{0, n - 1}, {n - 1, n + 1}}));
  EXPECT_EQ(Matches(**llama3, std::string(n, '\n')), (Spans{{0, n}}));
  EXPECT_EQ(Matches(**gpt2, std::string(n, 'a')), (Spans{{0, n}}));
  EXPECT_EQ(Matches(**gpt2, std::string(n, '!')), (Spans{{0, n}}));
  // Many short matches: megabytes of " !" are linear work.
  std::string alternating;
  for (size_t i = 0; i < n; ++i) alternating += " !";
  Spans spans;
  ASSERT_TRUE((*llama3)->FindMatches(alternating, &spans).ok());
  EXPECT_EQ(spans.size(), n);
}

// A run longer than the stack limit, and a pattern that backtracks without
// end, are ResourceExhausted errors naming the pattern; no matches are added.
TEST(SplitRegexTest, LimitHitIsAnError) {
  auto gpt2 = SplitRegex::Create(kGpt2);
  ASSERT_TRUE(gpt2.ok());
  for (const std::string& text : {std::string(4 << 20, ' '), std::string(4 << 20, 'a') + "b",
                                  "x " + std::string(3 << 20, '\t') + "y"}) {
    Spans spans = {{7, 8}};
    const absl::Status status = (*gpt2)->FindMatches(text, &spans);
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("limit"));
    EXPECT_EQ(spans, (Spans{{7, 8}}));
  }
  // Exponential backtracking stops at the retry limit.
  auto nested = SplitRegex::Create("(a|aa)+c");
  ASSERT_TRUE(nested.ok());
  Spans spans;
  const absl::Status status = (*nested)->FindMatches(std::string(64, 'a') + "b", &spans);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("(a|aa)+c"));
  // Smaller limits of one's own.
  auto small = SplitRegex::Create(kGpt2, SplitRegex::Limits{.retry_limit = 1000, .stack_limit = 1000});
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(Matches(**small, std::string(900, ' ') + "x"), (Spans{{0, 899}, {899, 901}}));
  EXPECT_EQ((*small)->FindMatches(std::string(5000, ' ') + "x", &spans).code(), absl::StatusCode::kResourceExhausted);
}

// One compiled regex serves many threads at once.
TEST(SplitRegexTest, ConcurrentSearches) {
  auto re = SplitRegex::Create(kLlama3);
  ASSERT_TRUE(re.ok());
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "Hello  world's 123456 \xE4\xBD\xA0\xE5\xA5\xBD!!\n\n  ";
  const Spans want = Matches(**re, text);
  ASSERT_GT(want.size(), 10000u);
  std::vector<Spans> got(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) {
        got[t].clear();
        if (!(*re)->FindMatches(text, &got[t]).ok()) return;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const Spans& spans : got) EXPECT_EQ(spans, want);
}

TEST(SplitRegexTest, LiteralPattern) {
  auto re = SplitRegex::CreateLiteral("\xE2\x96\x81");
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(Matches(**re,
                    "a\xE2\x96\x81"
                    "b.*"),
            (Spans{{1, 4}}));
  auto meta = SplitRegex::CreateLiteral(".*");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(Matches(**meta, "a.*b.*.*"), (Spans{{1, 3}, {4, 6}, {6, 8}}));
}

}  // namespace
}  // namespace tandem::tokenizer_internal
