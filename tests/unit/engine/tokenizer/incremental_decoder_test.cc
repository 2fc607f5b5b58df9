// IncrementalDecoder: streamed pieces are whole UTF-8 characters and add up
// to Decode(prompt + generated) minus Decode(prompt), for byte-level BPE and
// for SentencePiece (leading-space stripping, byte fallback).
#include <random>

#include "gtest/gtest.h"
#include "tests/unit/engine/tokenizer/tokenizer_test_util.h"

namespace tandem {
namespace {

using testing::FixtureDir;
using testing::IsValidUtf8;
using testing::LoadFixture;

constexpr char kReplacement[] = "\xEF\xBF\xBD";

// Streams `generated` after `prompt`; checks every piece and returns the
// concatenation (including Flush()).
std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated,
                   bool expect_no_replacement = true) {
  IncrementalDecoder decoder(tok, prompt);
  std::string all;
  for (int32_t id : generated) {
    const std::string piece = decoder.Add(id);
    EXPECT_TRUE(IsValidUtf8(piece)) << "piece is not whole UTF-8";
    if (expect_no_replacement) {
      EXPECT_EQ(piece.find(kReplacement), std::string::npos) << "piece: " << piece;
    }
    all += piece;
  }
  all += decoder.Flush();
  return all;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Decode(prompt + generated) with Decode(prompt) removed.
std::string Suffix(const Tokenizer& tok, const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated) {
  const std::string whole = tok.Decode(Concat(prompt, generated));
  const std::string head = tok.Decode(prompt);
  EXPECT_EQ(whole.substr(0, head.size()), head);
  return whole.substr(head.size());
}

const char kMultiByteText[] =
    "party \xF0\x9F\x8E\x89\xF0\x9F\x8E\x89 time \xE4\xBD\xA0\xE5\xA5\xBD, caf\xC3\xA9 "
    "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 end";

TEST(IncrementalDecoderTest, ByteLevelEmojiSplitAcrossByteTokens) {
  auto tok = LoadFixture("byte_level/llama3");
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = tok->Encode(kMultiByteText, false);
  ASSERT_GT(ids.size(), 20u);
  EXPECT_EQ(Stream(*tok, {}, ids), tok->Decode(ids));
  EXPECT_EQ(Stream(*tok, {}, ids), kMultiByteText);
  const std::vector<int32_t> prompt = tok->Encode("Hello there");
  EXPECT_EQ(Stream(*tok, prompt, ids), Suffix(*tok, prompt, ids));
}

TEST(IncrementalDecoderTest, HoldsIncompleteCharacterUntilFlush) {
  auto tok = LoadFixture("byte_level/llama3");
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> emoji = tok->Encode("\xF0\x9F\x8E\x89", false);
  ASSERT_EQ(emoji.size(), 4u);  // one byte token per byte
  IncrementalDecoder decoder(*tok, {});
  EXPECT_EQ(decoder.Add(emoji[0]), "");
  EXPECT_EQ(decoder.Add(emoji[1]), "");
  EXPECT_EQ(decoder.Flush(), kReplacement);  // the truncated sequence
}

TEST(IncrementalDecoderTest, SentencePieceKeepsSpaceAfterPrompt) {
  auto tok = LoadFixture("spm/legacy");
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> prompt = tok->Encode("Hello");                     // <s> ▁Hello
  const std::vector<int32_t> generated = tok->Encode("world and more", false);  // ▁world ...
  EXPECT_EQ(Stream(*tok, prompt, generated), " world and more");
  EXPECT_EQ(Stream(*tok, prompt, generated), Suffix(*tok, prompt, generated));
  // After only <s>, or nothing, the first token's space is stripped as
  // Decode strips it.
  EXPECT_EQ(Stream(*tok, {1}, generated), "world and more");
  EXPECT_EQ(Stream(*tok, {}, generated), "world and more");
  // The first generated piece already carries the space.
  IncrementalDecoder decoder(*tok, prompt);
  EXPECT_EQ(decoder.Add(generated[0]).substr(0, 1), " ");
}

TEST(IncrementalDecoderTest, SentencePieceByteFallbackAndSpecials) {
  auto tok = LoadFixture("spm/legacy");
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> generated = tok->Encode(kMultiByteText, false);
  const std::vector<int32_t> prompt = tok->Encode("Say:");
  EXPECT_EQ(Stream(*tok, prompt, generated), Suffix(*tok, prompt, generated));
  EXPECT_EQ(Stream(*tok, {}, generated), kMultiByteText);
  // A skipped special token in the middle of the stream.
  std::vector<int32_t> with_eos = tok->Encode("Hi", false);
  with_eos.push_back(2);
  const std::vector<int32_t> tail = tok->Encode("there", false);
  with_eos.insert(with_eos.end(), tail.begin(), tail.end());
  EXPECT_EQ(Stream(*tok, prompt, with_eos), Suffix(*tok, prompt, with_eos));
  EXPECT_EQ(Stream(*tok, {}, with_eos), "Hi there");
}

// Many held-out lines, cut at random points into prompt and generated ids.
TEST(IncrementalDecoderTest, RandomSplitsOfHeldOutText) {
  std::mt19937 rng(7);
  for (const char* name : {"spm/legacy", "spm/metaspace", "byte_level/llama3", "byte_level/gpt2"}) {
    auto tok = LoadFixture(name);
    ASSERT_NE(tok, nullptr);
    const nlohmann::json expected = testing::ReadJsonFile(
        FixtureDir(std::string(name).starts_with("spm") ? "spm" : "byte_level") / "expected.json");
    ASSERT_FALSE(expected.is_discarded());
    int n = 0;
    for (const auto& c : expected["cases"]) {
      if (++n > 300) break;
      const std::vector<int32_t> ids = tok->Encode(c["text"].get<std::string>());
      const size_t cut = std::uniform_int_distribution<size_t>(0, ids.size())(rng);
      const std::vector<int32_t> prompt(ids.begin(), ids.begin() + cut);
      const std::vector<int32_t> generated(ids.begin() + cut, ids.end());
      if (tok->Decode(prompt).ends_with(kReplacement)) continue;  // cut inside a character
      EXPECT_EQ(Stream(*tok, prompt, generated, /*expect_no_replacement=*/false), Suffix(*tok, prompt, generated))
          << name << " text '" << c["text"].get<std::string>() << "' cut " << cut;
    }
  }
}

}  // namespace
}  // namespace tandem
