// Synthetic datasets: exact lengths and ranges, shared prefixes, determinism
// per seed, and the sharegpt-like log-normal's medians.
#include "bench/load/dataset.h"

#include <algorithm>
#include <map>
#include <set>

#include "gtest/gtest.h"

namespace tandem::bench {
namespace {

DatasetConfig Random(LengthRange in, LengthRange out) {
  DatasetConfig c;
  c.input_len = in;
  c.output_len = out;
  return c;
}

void ExpectIdsInVocab(const std::vector<BenchRequest>& reqs, int64_t vocab_size) {
  for (const BenchRequest& r : reqs) {
    for (uint32_t id : r.prompt_token_ids) {
      ASSERT_GE(id, kFirstTokenId);
      ASSERT_LT(id, vocab_size);
    }
  }
}

TEST(BenchDatasetTest, FixedLengthsAreExact) {
  const DatasetConfig c = Random({100, 100}, {37, 37});
  ASSERT_TRUE(c.Validate().ok());
  const std::vector<BenchRequest> reqs = GenerateDataset(c, 50, 1);
  ASSERT_EQ(reqs.size(), 50u);
  for (const BenchRequest& r : reqs) {
    EXPECT_EQ(r.prompt_token_ids.size(), 100u);
    EXPECT_EQ(r.output_len, 37);
  }
  ExpectIdsInVocab(reqs, c.vocab_size);
}

TEST(BenchDatasetTest, RangesAreInclusiveAndCovered) {
  DatasetConfig c = Random({5, 8}, {1, 3});
  c.vocab_size = 10;
  ASSERT_TRUE(c.Validate().ok());
  std::set<size_t> in;
  std::set<int64_t> out;
  std::set<uint32_t> ids;
  const std::vector<BenchRequest> reqs = GenerateDataset(c, 500, 2);
  for (const BenchRequest& r : reqs) {
    in.insert(r.prompt_token_ids.size());
    out.insert(r.output_len);
    ids.insert(r.prompt_token_ids.begin(), r.prompt_token_ids.end());
  }
  EXPECT_EQ(in, (std::set<size_t>{5, 6, 7, 8}));
  EXPECT_EQ(out, (std::set<int64_t>{1, 2, 3}));
  EXPECT_EQ(ids, (std::set<uint32_t>{3, 4, 5, 6, 7, 8, 9}));  // [3, vocab_size)
}

TEST(BenchDatasetTest, OutputLengthChoicesAreEachDrawnAboutEquallyAndFit) {
  DatasetConfig c = Random({10, 20}, {1, 1});
  c.output_len_choices = {64, 128, 256};
  c.max_model_len = 276;
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  std::map<int64_t, int> count;
  for (const BenchRequest& r : GenerateDataset(c, 3000, 4)) ++count[r.output_len];
  ASSERT_EQ(count.size(), 3u);
  for (int64_t v : {64, 128, 256}) EXPECT_NEAR(count[v], 1000, 100) << v;  // binomial sd ~26
  c.max_model_len = 275;  // 20 + 256 no longer fits
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c.max_model_len = 1000;
  c.output_len_choices = {0, 5};
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BenchDatasetTest, DeterministicPerSeed) {
  const DatasetConfig c = Random({4, 40}, {1, 20});
  const std::vector<BenchRequest> a = GenerateDataset(c, 30, 5);
  const std::vector<BenchRequest> b = GenerateDataset(c, 30, 5);
  const std::vector<BenchRequest> other = GenerateDataset(c, 30, 6);
  bool differs = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt_token_ids, b[i].prompt_token_ids);
    EXPECT_EQ(a[i].output_len, b[i].output_len);
    differs |= a[i].prompt_token_ids != other[i].prompt_token_ids;
  }
  EXPECT_TRUE(differs);
}

TEST(BenchDatasetTest, ALongerDrawStartsWithTheShorterOne) {
  // The benchmark takes warmup requests from the end of one draw.
  for (DatasetKind kind : {DatasetKind::kRandom, DatasetKind::kShareGptLike, DatasetKind::kPrefix}) {
    DatasetConfig c = Random({3, 9}, {2, 4});
    c.kind = kind;
    if (kind == DatasetKind::kPrefix) c.prefix_len = 6;
    const std::vector<BenchRequest> shorter = GenerateDataset(c, 10, 3);
    const std::vector<BenchRequest> longer = GenerateDataset(c, 15, 3);
    for (size_t i = 0; i < shorter.size(); ++i) {
      EXPECT_EQ(shorter[i].prompt_token_ids, longer[i].prompt_token_ids) << DatasetKindName(kind) << " " << i;
      EXPECT_EQ(shorter[i].output_len, longer[i].output_len);
    }
  }
}

TEST(BenchDatasetTest, PrefixIsSharedExactly) {
  DatasetConfig c = Random({10, 20}, {8, 8});
  c.kind = DatasetKind::kPrefix;
  c.prefix_len = 32;
  ASSERT_TRUE(c.Validate().ok());
  const std::vector<BenchRequest> reqs = GenerateDataset(c, 40, 4);
  const std::vector<uint32_t> prefix(reqs[0].prompt_token_ids.begin(), reqs[0].prompt_token_ids.begin() + 32);
  std::set<std::vector<uint32_t>> suffixes;
  for (const BenchRequest& r : reqs) {
    ASSERT_GE(r.prompt_token_ids.size(), 42u);
    ASSERT_LE(r.prompt_token_ids.size(), 52u);
    EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), r.prompt_token_ids.begin()));
    suffixes.insert(std::vector<uint32_t>(r.prompt_token_ids.begin() + 32, r.prompt_token_ids.end()));
    EXPECT_EQ(r.output_len, 8);
  }
  EXPECT_EQ(suffixes.size(), reqs.size());  // the suffixes are random
  ExpectIdsInVocab(reqs, c.vocab_size);
}

TEST(BenchDatasetTest, SeveralPrefixesEachPromptStartsWithOneOfThem) {
  DatasetConfig c = Random({4, 4}, {2, 2});
  c.kind = DatasetKind::kPrefix;
  c.prefix_len = 24;
  c.num_prefixes = 8;
  ASSERT_TRUE(c.Validate().ok());
  const std::vector<BenchRequest> reqs = GenerateDataset(c, 400, 7);
  std::map<std::vector<uint32_t>, int> uses;
  for (const BenchRequest& r : reqs) {
    ASSERT_EQ(r.prompt_token_ids.size(), 28u);
    ++uses[std::vector<uint32_t>(r.prompt_token_ids.begin(), r.prompt_token_ids.begin() + 24)];
  }
  ASSERT_EQ(uses.size(), 8u);  // 400 draws of 8: every prefix is used
  for (const auto& [prefix, n] : uses) {
    EXPECT_GE(n, 25) << "uniform draws: 50 expected";  // a wide band around 50 (the seed is fixed)
    EXPECT_LE(n, 80);
  }
  // The same seed gives the same dataset; one prefix gives the single-prefix dataset of before.
  EXPECT_EQ(GenerateDataset(c, 400, 7)[123].prompt_token_ids, reqs[123].prompt_token_ids);
  c.num_prefixes = 1;
  const std::vector<BenchRequest> one = GenerateDataset(c, 5, 7);
  for (const BenchRequest& r : one) {
    EXPECT_TRUE(std::equal(one[0].prompt_token_ids.begin(), one[0].prompt_token_ids.begin() + 24,
                           r.prompt_token_ids.begin()));
  }
  c.num_prefixes = 0;
  EXPECT_FALSE(c.Validate().ok());
  c.num_prefixes = 2;
  c.kind = DatasetKind::kRandom;
  c.prefix_len = 0;
  EXPECT_EQ(c.Validate().message(),
            "--num-prefixes must be in [1, 100000]; above 1 it needs --dataset prefix or multi-turn and --prefix-len "
            ">= 1");
}

TEST(BenchDatasetTest, MultiTurnHoldsEachTurnsNewMessageInConversationOrder) {
  DatasetConfig c = Random({6, 6}, {3, 3});
  c.kind = DatasetKind::kMultiTurn;
  c.num_turns = 3;
  c.prefix_len = 10;
  c.num_prefixes = 2;
  c.max_model_len = 256;
  ASSERT_TRUE(c.Validate().ok());
  const std::vector<BenchRequest> reqs = GenerateDataset(c, 12, 5);
  std::set<std::vector<uint32_t>> prefixes;
  for (int i = 0; i < 12; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(reqs[i].conversation, i / 3);
    EXPECT_EQ(reqs[i].turn, i % 3);
    EXPECT_EQ(reqs[i].output_len, 3);
    // The first turn: a prefix and a message; later ones: the message only.
    EXPECT_EQ(reqs[i].prompt_token_ids.size(), i % 3 == 0 ? 16u : 6u);
    if (i % 3 == 0) prefixes.insert({reqs[i].prompt_token_ids.begin(), reqs[i].prompt_token_ids.begin() + 10});
  }
  EXPECT_LE(prefixes.size(), 2u);
  ExpectIdsInVocab(reqs, c.vocab_size);
  // The last turn's prompt (prefix + 3 messages + 2 outputs) and output must fit.
  c.max_model_len = 10 + 3 * 6 + 2 * 3 + 3 - 1;
  EXPECT_EQ(c.Validate().message(),
            "the longest request (prompt 34 + output 3 tokens) exceeds --max-model-len 36 (raise it to the server's "
            "context length)");
  c.max_model_len = 256;
  c.num_turns = 1;
  EXPECT_EQ(c.Validate().message(), "--num-turns needs --dataset multi-turn and must be in [2, 1000]");
  c.kind = DatasetKind::kRandom;
  c.num_turns = 2;
  c.prefix_len = 0;
  c.num_prefixes = 1;
  EXPECT_EQ(c.Validate().message(), "--num-turns needs --dataset multi-turn and must be in [2, 1000]");
  EXPECT_EQ(ParseDatasetKind("multi-turn").value(), DatasetKind::kMultiTurn);
}

TEST(BenchDatasetTest, PrefixWithEmptySuffixRepeatsThePrefix) {
  DatasetConfig c = Random({0, 0}, {4, 4});
  c.kind = DatasetKind::kPrefix;
  c.prefix_len = 16;
  ASSERT_TRUE(c.Validate().ok());
  const std::vector<BenchRequest> reqs = GenerateDataset(c, 5, 1);
  for (const BenchRequest& r : reqs) EXPECT_EQ(r.prompt_token_ids, reqs[0].prompt_token_ids);
  EXPECT_EQ(reqs[0].prompt_token_ids.size(), 16u);
}

TEST(BenchDatasetTest, ShareGptLikeFitsMaxModelLen) {
  DatasetConfig c;
  c.kind = DatasetKind::kShareGptLike;
  c.max_model_len = 64;
  ASSERT_TRUE(c.Validate().ok());
  bool input_clamped = false, output_clamped = false;
  for (const BenchRequest& r : GenerateDataset(c, 2000, 8)) {
    const int64_t in = static_cast<int64_t>(r.prompt_token_ids.size());
    ASSERT_GE(in, kShareGptMinInput);
    ASSERT_LE(in, 63);
    ASSERT_GE(r.output_len, 1);
    ASSERT_LE(in + r.output_len, 64);
    input_clamped |= in == 63;
    output_clamped |= in + r.output_len == 64;
  }
  EXPECT_TRUE(input_clamped);
  EXPECT_TRUE(output_clamped);
}

TEST(BenchDatasetTest, ShareGptLikeMediansMatchTheParameters) {
  // With room to spare nothing is clamped, so the sample medians estimate the
  // log-normals' medians (80 and 200). The median's standard error is
  // median * sigma * sqrt(2 pi) / (2 sqrt(n)): about 1.05% (input) and 0.91%
  // (output) for n = 20,001; the 5% tolerance is over 4.5 of them.
  DatasetConfig c;
  c.kind = DatasetKind::kShareGptLike;
  c.max_model_len = 1 << 30;
  std::vector<double> in, out;
  for (const BenchRequest& r : GenerateDataset(c, 20001, 11)) {
    in.push_back(static_cast<double>(r.prompt_token_ids.size()));
    out.push_back(static_cast<double>(r.output_len));
  }
  std::nth_element(in.begin(), in.begin() + 10000, in.end());
  std::nth_element(out.begin(), out.begin() + 10000, out.end());
  EXPECT_NEAR(in[10000], kShareGptInputMedian, kShareGptInputMedian * 0.05);
  EXPECT_NEAR(out[10000], kShareGptOutputMedian, kShareGptOutputMedian * 0.05);
}

TEST(BenchDatasetTest, ValidateRejectsWhatCannotFit) {
  EXPECT_TRUE(Random({128, 128}, {64, 64}).Validate().ok());  // the defaults: 192 <= 256
  EXPECT_EQ(Random({200, 200}, {57, 57}).Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Random({200, 200}, {56, 56}).Validate().ok());  // exactly 256
  EXPECT_FALSE(Random({1, 1}, {0, 0}).Validate().ok());       // nothing to generate
  EXPECT_FALSE(Random({0, 0}, {1, 1}).Validate().ok());       // empty prompt
  DatasetConfig prefix = Random({0, 100}, {56, 56});
  prefix.kind = DatasetKind::kPrefix;
  prefix.prefix_len = 101;
  EXPECT_FALSE(prefix.Validate().ok());  // 101 + 100 + 56 > 256
  prefix.prefix_len = 100;
  EXPECT_TRUE(prefix.Validate().ok());
  DatasetConfig random_with_prefix = Random({8, 8}, {8, 8});
  random_with_prefix.prefix_len = 4;
  EXPECT_FALSE(random_with_prefix.Validate().ok());
  DatasetConfig tiny_vocab = Random({8, 8}, {8, 8});
  tiny_vocab.vocab_size = 3;
  EXPECT_FALSE(tiny_vocab.Validate().ok());
}

TEST(BenchDatasetTest, ParsesLengthRanges) {
  EXPECT_EQ(*ParseLengthRange("7"), (LengthRange{7, 7}));
  EXPECT_EQ(*ParseLengthRange("5:8"), (LengthRange{5, 8}));
  EXPECT_FALSE(ParseLengthRange("8:5").ok());
  EXPECT_FALSE(ParseLengthRange("-1:5").ok());
  EXPECT_FALSE(ParseLengthRange("a").ok());
  EXPECT_FALSE(ParseLengthRange("5:").ok());
}

}  // namespace
}  // namespace tandem::bench
