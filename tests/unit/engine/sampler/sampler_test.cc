// SequenceSampler: exact picks for each processing step, seeded streams that
// do not depend on anything else, and parameter validation.
#include "engine/sampler/sampler.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

TEST(SamplerTest, GreedyPicksArgmaxLowestIdOnTies) {
  SequenceSampler s(Greedy(), {}, 0);
  std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.Sample(logits).token_id, 1);
}

TEST(SamplerTest, TopKOfOneIsGreedyAtAnyTemperature) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    p.seed = seed;
    SequenceSampler s(p, {}, 0);
    std::vector<float> logits = {0.1f, 0.2f, 3.0f, 0.3f};
    EXPECT_EQ(s.Sample(logits).token_id, 2);
  }
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // probs ~ {0.64, 0.24, 0.09, 0.03}: top_p 0.6 keeps only token 0.
  SamplingParams p;
  p.top_p = 0.6f;
  std::vector<float> base = {std::log(0.64f), std::log(0.24f), std::log(0.09f), std::log(0.03f)};
  for (uint64_t seed = 0; seed < 50; ++seed) {
    p.seed = seed;
    SequenceSampler s(p, {}, 0);
    std::vector<float> logits = base;
    EXPECT_EQ(s.Sample(logits).token_id, 0);
  }
  // top_p 0.8 keeps tokens 0 and 1 and never 2 or 3; both appear.
  p.top_p = 0.8f;
  std::vector<int> seen(4, 0);
  for (uint64_t seed = 0; seed < 200; ++seed) {
    p.seed = seed;
    SequenceSampler s(p, {}, 0);
    std::vector<float> logits = base;
    ++seen[s.Sample(logits).token_id];
  }
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_EQ(seen[2] + seen[3], 0);
}

TEST(SamplerTest, MinPDropsTokensBelowTheFloor) {
  SamplingParams p;
  p.min_p = 0.5f;  // keep tokens with prob >= 0.5 * max
  std::vector<float> base = {std::log(0.4f), std::log(0.3f), std::log(0.19f), std::log(0.11f)};
  std::vector<int> seen(4, 0);
  for (uint64_t seed = 0; seed < 200; ++seed) {
    p.seed = seed;
    SequenceSampler s(p, {}, 0);
    std::vector<float> logits = base;
    ++seen[s.Sample(logits).token_id];
  }
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_EQ(seen[2] + seen[3], 0);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDiffers) {
  SamplingParams p;
  p.seed = 1234;
  std::vector<float> base(64);
  for (size_t i = 0; i < base.size(); ++i) base[i] = std::sin(static_cast<float>(i));
  auto draw = [&](const SamplingParams& params) {
    SequenceSampler s(params, {}, 99);
    std::vector<int32_t> out;
    for (int i = 0; i < 32; ++i) {
      std::vector<float> logits = base;
      out.push_back(s.Sample(logits).token_id);
    }
    return out;
  };
  EXPECT_EQ(draw(p), draw(p));
  SamplingParams q = p;
  q.seed = 1235;
  EXPECT_NE(draw(p), draw(q));
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  // Token 0 (in prompt, 3.0 -> 1.5) loses to token 1 (2.0).
  const std::vector<int32_t> prompt = {0};
  SequenceSampler s(p, prompt, 0);
  std::vector<float> logits = {3.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.Sample(logits).token_id, 1);
  EXPECT_FLOAT_EQ(logits[0], 1.5f);
  // Token 1 is now generated: 2.0 -> 1.0; token 0 -> 1.5 wins.
  std::vector<float> again = {3.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.Sample(again).token_id, 0);
  EXPECT_FLOAT_EQ(again[1], 1.0f);
}

TEST(SamplerTest, FrequencyAndPresencePenaltiesCountGeneratedTokens) {
  SamplingParams p = Greedy();
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  SequenceSampler s(p, {}, 0);
  std::vector<float> a = {1.0f, 0.0f};
  EXPECT_EQ(s.Sample(a).token_id, 0);  // count(0) = 1
  std::vector<float> b = {1.0f, 0.0f};
  EXPECT_EQ(s.Sample(b).token_id, 0);  // 1 - 0.5 - 0.25 = 0.25 > 0
  EXPECT_FLOAT_EQ(b[0], 0.25f);
  std::vector<float> c = {1.0f, 0.0f};
  EXPECT_EQ(s.Sample(c).token_id, 1);  // count(0) = 2: 1 - 1.0 - 0.25 < 0
  EXPECT_FLOAT_EQ(c[0], -0.25f);
}

TEST(SamplerTest, LogprobsComeFromTheUnprocessedDistribution) {
  SamplingParams p = Greedy();
  p.logprobs = 2;
  SequenceSampler s(p, {}, 0);
  std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.25f)};
  SampledToken t = s.Sample(logits);
  EXPECT_EQ(t.token_id, 0);
  EXPECT_NEAR(t.logprob, std::log(0.5), 1e-6);
  ASSERT_EQ(t.top_logprobs.size(), 2u);
  EXPECT_EQ(t.top_logprobs[0].first, 0);
  EXPECT_EQ(t.top_logprobs[1].first, 1);  // tie with 2: lower id first
  EXPECT_NEAR(t.top_logprobs[1].second, std::log(0.25), 1e-6);
}

TEST(SamplingParamsTest, RejectsOutOfRangeValuesNamingTheField) {
  struct Case {
    void (*mutate)(SamplingParams&);
    const char* field;
  };
  const Case cases[] = {
      {[](SamplingParams& p) { p.temperature = -0.1f; }, "temperature"},
      {[](SamplingParams& p) { p.top_p = 0.0f; }, "top_p"},
      {[](SamplingParams& p) { p.top_p = 1.5f; }, "top_p"},
      {[](SamplingParams& p) { p.top_k = -5; }, "top_k"},
      {[](SamplingParams& p) { p.min_p = 2.0f; }, "min_p"},
      {[](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty"},
      {[](SamplingParams& p) { p.frequency_penalty = 3.0f; }, "frequency_penalty"},
      {[](SamplingParams& p) { p.presence_penalty = -3.0f; }, "presence_penalty"},
      {[](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens"},
      {[](SamplingParams& p) { p.logprobs = 21; }, "logprobs"},
  };
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
  for (const Case& c : cases) {
    SamplingParams p;
    c.mutate(p);
    absl::Status st = p.Validate();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(st.message().find(c.field), std::string::npos) << st.message();
  }
}

}  // namespace
}  // namespace tandem
