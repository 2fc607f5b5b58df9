// Byte-level BPE (GPT-2 ByteLevel pre-tokenizer, Llama-3 Split + ByteLevel)
// against a Python reference BPE (see make_byte_level_fixture.py), a
// hand-checked 10-merge vocabulary, and the NFC normalizer.
#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/tokenizer/tokenizer_test_util.h"

namespace tandem {
namespace {

using testing::FixtureDir;
using testing::Ids;
using testing::LoadFixture;
using testing::ReadJsonFile;
using testing::WriteTokenizerDir;

class ByteLevelTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    expected_ = ReadJsonFile(FixtureDir("byte_level") / "expected.json");
    ASSERT_FALSE(expected_.is_discarded()) << "missing fixture; run through ctest";
  }
  nlohmann::json expected_;
};

TEST_P(ByteLevelTest, EncodeAndDecodeMatchReference) {
  const std::string style = GetParam();
  auto tok = LoadFixture("byte_level/" + style);
  ASSERT_NE(tok, nullptr);
  for (const auto& c : expected_["cases"]) {
    const std::string text = c["text"];
    const auto& want = c[style];
    const std::vector<int32_t> ids = tok->Encode(text, /*add_special_tokens=*/false);
    EXPECT_EQ(ids, Ids(want["ids"])) << style << " text: '" << text << "'";
    EXPECT_EQ(tok->Decode(ids, /*skip_special_tokens=*/false), want["decoded"].get<std::string>()) << text;
    EXPECT_EQ(tok->Decode(ids, true), want["decoded_skip"].get<std::string>()) << text;
  }
}

// gpt2_prefix is left out: add_prefix_space changes the text by design.
class ByteLevelRoundTripTest : public ByteLevelTest {};

TEST_P(ByteLevelRoundTripTest, RoundTripsArbitraryUtf8) {
  const std::string style = GetParam();
  auto tok = LoadFixture("byte_level/" + style);
  ASSERT_NE(tok, nullptr);
  for (const auto& c : expected_["cases"]) {
    const std::string text = c["text"];
    if (text.find("<tool>") != std::string::npos) continue;  // lstrip/rstrip absorb spaces
    EXPECT_EQ(tok->Decode(tok->Encode(text, false), false), text);
  }
  const std::string all_bytes_text = "\xF0\x9F\x98\x80\xE4\xBD\xA0\xC3\xA9\x01\x7F\xEF\xBF\xBD \xF4\x8F\xBF\xBF";
  EXPECT_EQ(tok->Decode(tok->Encode(all_bytes_text, false)), all_bytes_text);
}

INSTANTIATE_TEST_SUITE_P(Styles, ByteLevelTest, ::testing::Values("gpt2", "gpt2_prefix", "llama3"));
INSTANTIATE_TEST_SUITE_P(Styles, ByteLevelRoundTripTest, ::testing::Values("gpt2", "llama3"));

TEST(ByteLevelSpecialTest, Llama3BosFromTemplateAndEosFromConfig) {
  const nlohmann::json expected = ReadJsonFile(FixtureDir("byte_level") / "expected.json");
  ASSERT_FALSE(expected.is_discarded());
  auto tok = LoadFixture("byte_level/llama3");
  ASSERT_NE(tok, nullptr);
  const int bos = expected["llama3_bos"], eos = expected["llama3_eos"];
  EXPECT_EQ(tok->bos_id(), bos);
  EXPECT_EQ(tok->eos_id(), eos);
  const std::vector<int32_t> ids = tok->Encode("Hi");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], bos);
  EXPECT_EQ(tok->Encode("<|begin_of_text|>Hi", false)[0], bos);
  EXPECT_TRUE(tok->IsSpecial(bos));
  EXPECT_FALSE(tok->IsSpecial(*tok->TokenToId("<tool>")));  // non-special added token

  auto gpt2 = LoadFixture("byte_level/gpt2");
  ASSERT_NE(gpt2, nullptr);
  const int eot = expected["gpt2_eot"];
  EXPECT_EQ(gpt2->eos_id(), eot);
  EXPECT_EQ(gpt2->bos_id(), eot);
  EXPECT_EQ(gpt2->Encode("Hi"), gpt2->Encode("Hi", false));  // add_bos_token false
}

// Speed is measured by bench/kernels/tokenizer_bench.cc, not here.
TEST(ByteLevelSpecialTest, LargeTextIsExact) {
  const nlohmann::json expected = ReadJsonFile(FixtureDir("byte_level") / "expected.json");
  ASSERT_FALSE(expected.is_discarded());
  auto tok = LoadFixture("byte_level/llama3");
  ASSERT_NE(tok, nullptr);
  const std::string text = expected["big_text"];
  const std::vector<int32_t> ids = tok->Encode(text, false);
  EXPECT_EQ(ids, Ids(expected["big_ids_llama3"]));
  EXPECT_EQ(tok->Decode(ids), text);
}

// A vocabulary small enough to check by hand: bytes a b c Ġ and 10 merges.
constexpr char kTinyByteLevel[] = R"({
  "added_tokens": [{"id": 14, "content": "<eot>", "special": true, "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "aa": 4, "Ġa": 5, "bc": 6, "aaa": 7,
            "Ġabc": 8, "aab": 9, "ab": 10, "aaab": 11, "cc": 12, "Ġc": 13},
            "merges": ["a a", "Ġ a", "b c", "aa a", "Ġa bc", "aa b", "a b", "aaa b", "c c", "Ġ c"]}
})";

TEST(ByteLevelHandCheckedTest, TenMerges) {
  auto tok = Tokenizer::Load(WriteTokenizerDir(kTinyByteLevel));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  // "aaab" -> a a a b -> (a a)#0 -> aa a b -> (aa a)#3 -> aaa b -> (aaa b)#7.
  // " abc" -> Ġ a b c -> (Ġ a)#1 -> (b c)#2 -> (Ġa bc)#4.
  EXPECT_EQ(t.Encode("aaab abc"), (std::vector<int32_t>{11, 8}));
  // " ccc" -> Ġ c c c: (c c)#8 merges the leftmost pair first; (Ġ c)#9 is
  // then stale because Ġ now precedes "cc".
  EXPECT_EQ(t.Encode("cc ccc"), (std::vector<int32_t>{12, 3, 12, 2}));
  // Equal ranks merge left to right: a a a a -> aa a a -> aa aa.
  EXPECT_EQ(t.Encode("aaaa"), (std::vector<int32_t>{4, 4}));
  EXPECT_EQ(t.Encode("ba"), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(t.Encode("ab"), (std::vector<int32_t>{10}));
  // A byte missing from the vocabulary (no unk, no byte fallback) is
  // dropped before merging, so "a" and "b" become adjacent (as in HF).
  EXPECT_EQ(t.Encode("adb"), (std::vector<int32_t>{10}));
  EXPECT_EQ(t.Encode("a<eot>b"), (std::vector<int32_t>{0, 14, 1}));
  EXPECT_EQ(t.Decode(std::vector<int32_t>{11, 8}), "aaab abc");
  EXPECT_EQ(t.Decode(std::vector<int32_t>{0, 14, 1}), "ab");
  EXPECT_EQ(t.Decode(std::vector<int32_t>{0, 14, 1}, false), "a<eot>b");
  EXPECT_EQ(t.vocab_size(), 15);
  EXPECT_FALSE(t.bos_id().has_value());
  EXPECT_FALSE(t.eos_id().has_value());
}

TEST(ByteLevelHandCheckedTest, InvalidUtf8DecodesToReplacementChar) {
  auto tok = Tokenizer::Load(WriteTokenizerDir(kTinyByteLevel));
  ASSERT_TRUE(tok.ok()) << tok.status();
  // Add tokens for the bytes of "é" (C3 A9): Ã is C3, © is A9.
  const std::string json =
      std::string(kTinyByteLevel)
          .replace(std::string(kTinyByteLevel).find("\"Ġc\": 13"), 9, "\"Ġc\": 13, \"Ã\": 20, \"©\": 21");
  auto tok2 = Tokenizer::Load(WriteTokenizerDir(json));
  ASSERT_TRUE(tok2.ok()) << tok2.status();
  EXPECT_EQ((*tok2)->Encode("\xC3\xA9"), (std::vector<int32_t>{20, 21}));
  EXPECT_EQ((*tok2)->Decode(std::vector<int32_t>{20, 21}), "\xC3\xA9");
  EXPECT_EQ((*tok2)->Decode(std::vector<int32_t>{20}), "\xEF\xBF\xBD");
  EXPECT_EQ((*tok2)->Decode(std::vector<int32_t>{21, 0}),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ((*tok2)->Decode(std::vector<int32_t>{20, 20, 21}), "\xEF\xBF\xBD\xC3\xA9");
}

TEST(ByteLevelHandCheckedTest, NfcNormalizer) {
  // Qwen2-style: NFC before the byte-level split. "e" + U+0301 -> U+00E9.
  std::string json = kTinyByteLevel;
  json.replace(json.find("\"normalizer\": null"), 18, R"("normalizer": {"type": "NFC"})");
  json.replace(json.find("\"Ġc\": 13"), 9, "\"Ġc\": 13, \"Ã\": 20, \"©\": 21, \"e\": 22, \"Ì\": 23, \"ģ\": 24");
  auto tok = Tokenizer::Load(WriteTokenizerDir(json));
  if (tok.status().code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << tok.status();
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("e\xCC\x81"), (std::vector<int32_t>{20, 21}));
  EXPECT_EQ((*tok)->Encode("\xC3\xA9"), (std::vector<int32_t>{20, 21}));
}

}  // namespace
}  // namespace tandem
