// SentencePiece-style BPE (Llama-2 tokenizer.json, both the legacy
// Prepend/Replace normalizer form and the Metaspace pre-tokenizer form)
// against ids from a real SentencePiece model (see make_spm_fixture.py).
#include "gtest/gtest.h"
#include "tests/unit/engine/tokenizer/tokenizer_test_util.h"

namespace tandem {
namespace {

using testing::FixtureDir;
using testing::Ids;
using testing::LoadFixture;
using testing::ReadJsonFile;

class SentencePieceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    expected_ = ReadJsonFile(FixtureDir("spm") / "expected.json");
    ASSERT_FALSE(expected_.is_discarded()) << "missing fixture; run through ctest";
  }
  nlohmann::json expected_;
};

TEST_F(SentencePieceTest, LegacyEncodeMatchesSentencePiece) {
  auto tok = LoadFixture("spm/legacy");
  ASSERT_NE(tok, nullptr);
  int checked = 0;
  for (const auto& c : expected_["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tok->Encode(text, /*add_special_tokens=*/false), Ids(c["legacy_ids"])) << "text: '" << text << "'";
    ++checked;
  }
  EXPECT_GT(checked, 600);
}

TEST_F(SentencePieceTest, MetaspaceEncodeMatchesSentencePiece) {
  auto tok = LoadFixture("spm/metaspace");
  ASSERT_NE(tok, nullptr);
  for (const auto& c : expected_["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tok->Encode(text, false), Ids(c["metaspace_ids"])) << "text: '" << text << "'";
  }
}

TEST_F(SentencePieceTest, DecodeMatchesSentencePiece) {
  for (const char* name : {"spm/legacy", "spm/metaspace"}) {
    auto tok = LoadFixture(name);
    ASSERT_NE(tok, nullptr);
    const bool legacy = std::string(name) == "spm/legacy";
    for (const auto& c : expected_["cases"]) {
      const std::string text = c["text"];
      EXPECT_EQ(tok->Decode(Ids(c["legacy_ids"])), c["decoded"].get<std::string>())
          << name << " text: '" << text << "'";
      // Metaspace "first" gives " x" one "▁", so Decode drops its space (as HF does).
      EXPECT_EQ(tok->Decode(tok->Encode(text)), c[legacy ? "decoded" : "metaspace_decoded"].get<std::string>())
          << name << " text: '" << text << "'";
    }
  }
}

TEST_F(SentencePieceTest, BosFromConfigOrTemplate) {
  for (const char* name : {"spm/legacy", "spm/metaspace"}) {
    auto tok = LoadFixture(name);
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->bos_id(), 1) << name;
    EXPECT_EQ(tok->eos_id(), 2) << name;
    EXPECT_EQ(tok->vocab_size(), expected_["vocab_size"].get<int>()) << name;
    const std::vector<int32_t> with = tok->Encode("Hello world");
    const std::vector<int32_t> without = tok->Encode("Hello world", false);
    ASSERT_EQ(with.size(), without.size() + 1) << name;
    EXPECT_EQ(with[0], 1) << name;
    EXPECT_TRUE(std::equal(without.begin(), without.end(), with.begin() + 1)) << name;
    EXPECT_TRUE(tok->IsSpecial(1));
    EXPECT_FALSE(tok->IsSpecial(with[1]));
    EXPECT_EQ(tok->IdToToken(1), "<s>");
    EXPECT_EQ(tok->TokenToId("<0x0A>"), tok->TokenToId("<0x0A>"));
    EXPECT_TRUE(tok->TokenToId("<0x0A>").has_value());
    EXPECT_FALSE(tok->TokenToId("no such token").has_value());
    EXPECT_EQ(tok->IdToToken(-1), "");
    EXPECT_EQ(tok->IdToToken(tok->vocab_size()), "");
  }
}

TEST_F(SentencePieceTest, SpecialTokensKeptOrSkippedInDecode) {
  auto tok = LoadFixture("spm/legacy");
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = tok->Encode("Hello<s>world");
  EXPECT_EQ(tok->Decode(ids, /*skip_special_tokens=*/false), "<s> Hello<s> world");
  EXPECT_EQ(tok->Decode(ids, true), "Hello world");
  // Out-of-range ids decode to nothing.
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{-5, 1 << 20}), "");
}

// Speed is measured by bench/kernels/tokenizer_bench.cc, not here.
TEST_F(SentencePieceTest, LargeHeldOutTextIsExact) {
  auto tok = LoadFixture("spm/legacy");
  ASSERT_NE(tok, nullptr);
  const std::string text = expected_["big_text"];
  ASSERT_GT(text.size(), 150000u);
  const std::vector<int32_t> ids = tok->Encode(text, false);
  EXPECT_EQ(ids, Ids(expected_["big_ids"]));
  EXPECT_EQ(tok->Decode(ids), text);
}

}  // namespace
}  // namespace tandem
