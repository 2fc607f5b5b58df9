// The tokenizer.json pipeline parts on their own, against the behaviour that
// HuggingFace tokenizers documents: Split behaviours, Digits, Metaspace,
// ByteLevel prefix space, normalizers, added-token matching, decoders.
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/decoder.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/engine/tokenizer/tokenizer_test_util.h"

namespace tandem::tokenizer_internal {
namespace {

using ::testing::ElementsAre;
using Strings = std::vector<std::string>;

Strings PreTokenize(const std::string& config, const std::string& text, bool at_start = true) {
  auto pre = ParsePreTokenizer(nlohmann::json::parse(config));
  EXPECT_TRUE(pre.ok()) << pre.status();
  if (!pre.ok()) return {};
  std::vector<PreToken> pieces = {{text, at_start}};
  const absl::Status status = (*pre)->Apply(&pieces);
  EXPECT_TRUE(status.ok()) << status;
  Strings out;
  for (const PreToken& p : pieces) out.push_back(p.text);
  return out;
}

std::string SplitConfig(const std::string& behavior, bool invert = false) {
  return R"({"type": "Split", "pattern": {"String": "-"}, "behavior": ")" + behavior + R"(", "invert": )" +
         (invert ? "true" : "false") + "}";
}

// The examples of HuggingFace's SplitDelimiterBehavior documentation.
TEST(PreTokenizerTest, SplitBehaviors) {
  const std::string text = "the-final--countdown";
  EXPECT_THAT(PreTokenize(SplitConfig("Removed"), text), ElementsAre("the", "final", "countdown"));
  EXPECT_THAT(PreTokenize(SplitConfig("Isolated"), text), ElementsAre("the", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(PreTokenize(SplitConfig("MergedWithPrevious"), text), ElementsAre("the-", "final-", "-", "countdown"));
  EXPECT_THAT(PreTokenize(SplitConfig("MergedWithNext"), text), ElementsAre("the", "-final", "-", "-countdown"));
  EXPECT_THAT(PreTokenize(SplitConfig("Contiguous"), text), ElementsAre("the", "-", "final", "--", "countdown"));
  EXPECT_THAT(PreTokenize(SplitConfig("Removed", /*invert=*/true), text), ElementsAre("-", "-", "-"));
}

TEST(PreTokenizerTest, DigitsAndSequence) {
  EXPECT_THAT(PreTokenize(R"({"type": "Digits", "individual_digits": true})", "ab123c"),
              ElementsAre("ab", "1", "2", "3", "c"));
  EXPECT_THAT(PreTokenize(R"({"type": "Digits", "individual_digits": false})", "ab123c"),
              ElementsAre("ab", "123", "c"));
  EXPECT_THAT(PreTokenize(R"({"type": "Sequence", "pretokenizers": [
                  {"type": "WhitespaceSplit"}, {"type": "Digits", "individual_digits": true}]})",
                          "a1  b22\tc"),
              ElementsAre("a", "1", "b", "2", "2", "c"));
}

TEST(PreTokenizerTest, MetaspacePrependSchemes) {
  const std::string sp = "\xE2\x96\x81";
  EXPECT_THAT(PreTokenize(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true})",
                          "hey friend"),
              ElementsAre(sp + "hey", sp + "friend"));
  EXPECT_THAT(PreTokenize(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})",
                          "hey friend", /*at_start=*/false),
              ElementsAre("hey" + sp + "friend"));
  EXPECT_THAT(PreTokenize(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})",
                          "hey friend", /*at_start=*/true),
              ElementsAre(sp + "hey" + sp + "friend"));
  EXPECT_THAT(PreTokenize(R"({"type": "Metaspace", "replacement": "▁", "add_prefix_space": false})", "a b"),
              ElementsAre("a", sp + "b"));
}

TEST(PreTokenizerTest, ByteLevelPrefixSpaceAndMapping) {
  EXPECT_THAT(PreTokenize(R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})", "hello world"),
              ElementsAre("\xC4\xA0hello", "\xC4\xA0world"));
  EXPECT_THAT(PreTokenize(R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})", "a b\n"),
              ElementsAre("a\xC4\xA0"
                          "b\xC4\x8A"));
}

TEST(NormalizerTest, LegacySentencePieceSequence) {
  auto norm = ParseNormalizer(nlohmann::json::parse(R"({"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})"));
  ASSERT_TRUE(norm.ok()) << norm.status();
  std::string text = "hi  there";
  ASSERT_TRUE((*norm)->Normalize(&text).ok());
  EXPECT_EQ(text, "\xE2\x96\x81hi\xE2\x96\x81\xE2\x96\x81there");
  std::string empty;
  ASSERT_TRUE((*norm)->Normalize(&empty).ok());
  EXPECT_EQ(empty, "");
  auto regex =
      ParseNormalizer(nlohmann::json::parse(R"({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})"));
  ASSERT_TRUE(regex.ok()) << regex.status();
  text = "a    b  c";
  ASSERT_TRUE((*regex)->Normalize(&text).ok());
  EXPECT_EQ(text, "a b c");
}

AddedToken Token(int32_t id, std::string content, bool lstrip = false, bool rstrip = false, bool single_word = false) {
  AddedToken t;
  t.id = id;
  t.content = std::move(content);
  t.lstrip = lstrip;
  t.rstrip = rstrip;
  t.single_word = single_word;
  return t;
}

std::vector<std::string> SplitText(const AddedTokenMatcher& m, std::string_view text) {
  std::vector<std::string> out;
  for (const TextSegment& s : m.Split(text)) {
    std::string piece(text.substr(s.begin, s.end - s.begin));
    out.push_back(s.id >= 0 ? absl::StrCat("#", s.id, ":", piece) : piece);
  }
  return out;
}

TEST(AddedTokensTest, LeftmostLongestAndStripping) {
  const std::vector<AddedToken> tokens = {Token(1, "<a>"), Token(2, "<a><b>"), Token(3, "<t>", true, true),
                                          Token(4, "w", false, false, /*single_word=*/true)};
  std::vector<std::string> contents;
  for (const auto& t : tokens) contents.push_back(t.content);
  const AddedTokenMatcher m(tokens, contents);
  EXPECT_THAT(SplitText(m, "x<a><b>y<a>"), ElementsAre("x", "#2:<a><b>", "y", "#1:<a>"));
  EXPECT_THAT(SplitText(m, "x  <t> \n y"), ElementsAre("x", "#3:  <t> \n ", "y"));
  EXPECT_THAT(SplitText(m, "<a>  <t>"), ElementsAre("#1:<a>", "#3:  <t>"));
  EXPECT_THAT(SplitText(m, "we w w. _w"), ElementsAre("we ", "#4:w", " ", "#4:w", ". _w"));
  EXPECT_THAT(SplitText(m, ""), ElementsAre(""));
}

std::string DecodeWith(const std::string& config, std::vector<std::string> tokens, bool continuation = false) {
  auto decoder = Decoder::FromJson(nlohmann::json::parse(config));
  EXPECT_TRUE(decoder.ok()) << decoder.status();
  return decoder.ok() ? (*decoder)->Decode(std::move(tokens), continuation) : "";
}

TEST(DecoderTest, SentencePieceChainsAndContinuation) {
  const std::string legacy = R"({"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})";
  EXPECT_EQ(DecodeWith(legacy, {"\xE2\x96\x81Hi", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "!"}), "Hi\xF0\x9F\x98\x80!");
  EXPECT_EQ(DecodeWith(legacy, {"\xE2\x96\x81Hi", "\xE2\x96\x81there"}, /*continuation=*/true), " Hi there");
  EXPECT_EQ(DecodeWith(legacy, {"<0xF0>", "<0x9F>"}), "\xEF\xBF\xBD");
  const std::string metaspace = R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})";
  EXPECT_EQ(DecodeWith(metaspace, {"\xE2\x96\x81Hi", "\xE2\x96\x81there"}), "Hi there");
  EXPECT_EQ(DecodeWith(metaspace, {"\xE2\x96\x81Hi", "\xE2\x96\x81there"}, true), " Hi there");
  EXPECT_EQ(DecodeWith("null", {"a", "b"}), "a b");
  EXPECT_EQ(DecodeWith(R"({"type": "ByteLevel"})", {"\xC4\xA0Hi", "<|eot|>"}), " Hi<|eot|>");
  EXPECT_EQ(Decoder::FromJson(nlohmann::json::parse(R"({"type": "WordPiece"})")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::tokenizer_internal
