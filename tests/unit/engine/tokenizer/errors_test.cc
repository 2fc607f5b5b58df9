// Tokenizer::Load errors: each names the file and what is wrong.
#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/tokenizer/tokenizer_test_util.h"

namespace tandem {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::WriteTokenizerDir;

// A valid minimal tokenizer.json with `model`, `pre_tokenizer` and
// `normalizer` replaceable.
constexpr char kModel[] = R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";

std::string Json(const std::string& model = kModel, const std::string& pre_tokenizer = "null",
                 const std::string& normalizer = "null", const std::string& added = "[]") {
  return R"({"added_tokens": )" + added + R"(, "normalizer": )" + normalizer + R"(, "pre_tokenizer": )" +
         pre_tokenizer + R"(, "decoder": null, "model": )" + model + "}";
}

void ExpectLoadError(const std::filesystem::path& dir, absl::StatusCode code, const std::string& part) {
  auto tok = Tokenizer::Load(dir);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), code) << tok.status();
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(part)) << tok.status();
}

TEST(TokenizerErrorsTest, MinimalTokenizerLoads) {
  auto tok = Tokenizer::Load(WriteTokenizerDir(Json()));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("abab"), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{2, 0}), "ab a");  // no decoder: joined by spaces
}

TEST(TokenizerErrorsTest, LoadsFromFilePathToo) {
  const std::filesystem::path dir = WriteTokenizerDir(Json(), R"({"eos_token": "ab"})");
  auto tok = Tokenizer::Load(dir / "tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->eos_id(), 2);  // tokenizer_config.json beside it was read
}

TEST(TokenizerErrorsTest, MissingFileIsNotFoundNamingThePath) {
  const std::filesystem::path dir = testing::TestWork() / "no_such_tokenizer_dir";
  auto tok = Tokenizer::Load(dir);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr((dir / "tokenizer.json").string()));
}

TEST(TokenizerErrorsTest, BadJson) {
  ExpectLoadError(WriteTokenizerDir("{\"model\": [1, 2"), absl::StatusCode::kInvalidArgument, "tokenizer.json");
  ExpectLoadError(WriteTokenizerDir("[]"), absl::StatusCode::kInvalidArgument, "not an object");
  ExpectLoadError(WriteTokenizerDir(Json(), "{broken"), absl::StatusCode::kInvalidArgument, "tokenizer_config.json");
  ExpectLoadError(WriteTokenizerDir(R"({"normalizer": null})"), absl::StatusCode::kInvalidArgument, "model");
  // Wrong JSON types are reported, not thrown.
  ExpectLoadError(WriteTokenizerDir(Json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": []})", "null", "null",
                                         R"([{"id": "seven", "content": "x"}])")),
                  absl::StatusCode::kInvalidArgument, "tokenizer.json");
  ExpectLoadError(WriteTokenizerDir(Json(R"({"type": "BPE", "vocab": {"a": "zero"}, "merges": []})")),
                  absl::StatusCode::kInvalidArgument, "vocab");
}

// A decoder Sequence nested 200,000 levels deep (6 MB) is refused before
// parsing: reading nested steps recurses once per level and used to
// overflow the stack.
TEST(TokenizerErrorsTest, DeeplyNestedSequenceIsAnErrorNotAStackOverflow) {
  const int depth = 200000;
  std::string decoder;
  for (int i = 0; i < depth; ++i) decoder += R"({"type": "Sequence", "decoders": [)";
  decoder += R"({"type": "Fuse"})";
  for (int i = 0; i < depth; ++i) decoder += "]}";
  std::string json = Json();
  json.replace(json.find(R"("decoder": null)"), 15, R"("decoder": )" + decoder);
  ExpectLoadError(WriteTokenizerDir(json), absl::StatusCode::kInvalidArgument, "nested deeper than");
}

// Found by fuzz/tokenizer_load_fuzz.cc: an added token's id of 1e34 was
// converted to int32 (undefined behaviour); 2^32 + 1 wrapped to id 1, the
// vocabulary's "b". Vocabulary ids near INT32_MAX overflowed the id table's
// size (and sized it in gigabytes).
TEST(TokenizerErrorsTest, TokenIdsOutsideTheSupportedRangeAreErrors) {
  for (const char* id : {"1.1e34", "4294967297", "-1", "2.0", "4194304"}) {
    ExpectLoadError(WriteTokenizerDir(Json(kModel, "null", "null", std::string(R"([{"id": )") + id +
                                                                        R"(, "content": "x", "special": true}])")),
                    absl::StatusCode::kInvalidArgument, "is not an integer in [0, 4194304)");
  }
  for (const char* id : {"2147483647", "4194304"}) {
    ExpectLoadError(WriteTokenizerDir(Json(std::string(R"({"type": "BPE", "vocab": {"a": )") + id + "}}")),
                    absl::StatusCode::kInvalidArgument, "model.vocab['a']: id is not an integer in [0, 4194304)");
  }
  auto tok = Tokenizer::Load(WriteTokenizerDir(Json(kModel, "null", "null",
                                                    R"([{"id": 4194303, "content": "x", "special": true}])")));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), Tokenizer::kMaxVocabSize);
}

TEST(TokenizerErrorsTest, UnsupportedModelTypeIsNamed) {
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    const std::string model = std::string(R"({"type": ")") + type + R"(", "vocab": {"a": 0}})";
    ExpectLoadError(WriteTokenizerDir(Json(model)), absl::StatusCode::kInvalidArgument, type);
  }
  ExpectLoadError(WriteTokenizerDir(Json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": [],
                                             "continuing_subword_prefix": "##"})")),
                  absl::StatusCode::kInvalidArgument, "continuing_subword_prefix");
}

TEST(TokenizerErrorsTest, MalformedMerges) {
  const std::string vocab = R"("vocab": {"a": 0, "b": 1, "ab": 2})";
  for (const auto& [merges, part] :
       std::vector<std::pair<std::string, std::string>>{{R"(["a b c"])", "merges[0]"},
                                                        {R"(["ab"])", "merges[0]"},
                                                        {R"(["a b", ["a"]])", "merges[1]"},
                                                        {R"([1])", "merges[0]"},
                                                        {R"(["b a"])", "'ba' is not in the vocabulary"},
                                                        {R"([["a", "z"]])", "'z' is not in the vocabulary"},
                                                        {R"("a b")", "merges"}}) {
    const std::string model = R"({"type": "BPE", )" + vocab + R"(, "merges": )" + merges + "}";
    ExpectLoadError(WriteTokenizerDir(Json(model)), absl::StatusCode::kInvalidArgument, part);
  }
}

TEST(TokenizerErrorsTest, UnsupportedPipelinePartsAreNamed) {
  ExpectLoadError(WriteTokenizerDir(Json(kModel, R"({"type": "BertPreTokenizer"})")),
                  absl::StatusCode::kInvalidArgument, "BertPreTokenizer");
  ExpectLoadError(WriteTokenizerDir(Json(kModel, "null", R"({"type": "BertNormalizer"})")),
                  absl::StatusCode::kInvalidArgument, "BertNormalizer");
  // A pattern that does not compile (lookaround compiles since the regexes
  // run on Oniguruma).
  ExpectLoadError(
      WriteTokenizerDir(Json(kModel, R"({"type": "Split", "pattern": {"Regex": "x(y"}, "behavior": "Isolated"})")),
      absl::StatusCode::kInvalidArgument, "x(y");
  ExpectLoadError(
      WriteTokenizerDir(Json(kModel, R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"})")),
      absl::StatusCode::kInvalidArgument, "Sideways");
}

// A split or Replace regex that hits its limits on hostile text fails
// TryEncode with ResourceExhausted (Encode gives no ids); it never yields a
// different split. Text within the limits encodes as usual.
TEST(TokenizerErrorsTest, RegexLimitIsAnErrorNotAWrongSplit) {
  const std::string split = R"({"type": "Split", "pattern": {"Regex": " ?\\p{L}+|\\s+(?!\\S)|\\s+"},
                                "behavior": "Isolated"})";
  const std::string replace = R"({"type": "Replace", "pattern": {"Regex": "(b|bb)+c"}, "content": "a"})";
  for (const auto& [pre_tokenizer, normalizer] :
       std::vector<std::pair<std::string, std::string>>{{split, "null"}, {"null", replace}}) {
    auto tok = Tokenizer::Load(WriteTokenizerDir(Json(kModel, pre_tokenizer, normalizer)));
    ASSERT_TRUE(tok.ok()) << tok.status();
    auto ids = (*tok)->TryEncode("abab");
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, (std::vector<int32_t>{2, 2}));
    const std::string hostile = std::string(4 << 20, 'b') + "x";
    ids = (*tok)->TryEncode(hostile);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kResourceExhausted) << ids.status();
    EXPECT_THAT(std::string(ids.status().message()), HasSubstr("limit"));
    EXPECT_TRUE((*tok)->Encode(hostile).empty());
  }
}

TEST(TokenizerErrorsTest, ConfigNamesUnknownToken) {
  ExpectLoadError(WriteTokenizerDir(Json(), R"({"eos_token": "</nope>"})"), absl::StatusCode::kInvalidArgument,
                  "</nope>");
  ExpectLoadError(WriteTokenizerDir(Json(), R"({"add_bos_token": true})"), absl::StatusCode::kInvalidArgument,
                  "bos_token");
}

}  // namespace
}  // namespace tandem
