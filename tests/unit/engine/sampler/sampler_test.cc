// SequenceSampler: exact picks for each processing step, seeded streams that
// do not depend on anything else, the distribution of the draws, logprobs,
// and parameter validation.
#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
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

std::vector<float> NormalRow(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

// The kept tokens' probabilities, renormalised, computed as the sampler did
// before selection replaced sorting: a full sort and double exp. 0 = dropped.
std::vector<double> ReferenceProbs(const SamplingParams& p, const std::vector<float>& logits) {
  std::vector<int32_t> cand(logits.size());
  std::iota(cand.begin(), cand.end(), 0);
  std::sort(cand.begin(), cand.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  size_t keep = cand.size();
  if (p.top_k > 0) keep = std::min<size_t>(keep, p.top_k);
  std::vector<double> probs(keep);
  const double mx = logits[cand[0]] / p.temperature;
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i) sum += probs[i] = std::exp(logits[cand[i]] / p.temperature - mx);
  for (double& q : probs) q /= sum;
  if (p.top_p < 1.0f) {
    double cum = 0.0;
    size_t n = 0;
    while (n < keep && cum < p.top_p) cum += probs[n++];
    keep = std::max<size_t>(n, 1);
  }
  if (p.min_p > 0.0f) {
    size_t n = 1;
    while (n < keep && probs[n] >= p.min_p * probs[0]) ++n;
    keep = n;
  }
  std::vector<double> out(logits.size(), 0.0);
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += probs[i];
  for (size_t i = 0; i < keep; ++i) out[cand[i]] = probs[i] / total;
  return out;
}

TEST(SamplerTest, DrawsFollowTheRenormalisedKeptProbabilities) {
  struct Case {
    size_t vocab;
    float scale;  // of the normal logits
    float temperature, top_p, min_p;
    int32_t top_k;
  };
  const Case cases[] = {
      {1000, 0.05f, 0.8f, 0.95f, 0.0f, 0},  // the model default on near-flat logits
      {1000, 1.0f, 0.8f, 0.9f, 0.0f, 0},
      {500, 2.0f, 1.3f, 0.8f, 0.02f, 100},
      {300, 1.5f, 1.0f, 1.0f, 0.1f, 0},
  };
  constexpr int kDraws = 200000;
  for (const Case& c : cases) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.top_k = c.top_k;
    p.seed = 77;
    const std::vector<float> logits = NormalRow(c.vocab, c.vocab, c.scale);
    const std::vector<double> want = ReferenceProbs(p, logits);
    SequenceSampler s(p, {}, 0);
    std::vector<int> seen(c.vocab, 0);
    std::vector<float> row(c.vocab);
    for (int d = 0; d < kDraws; ++d) {
      row = logits;
      ++seen[s.Sample(row).token_id];
    }
    // Pearson's chi-square over the kept tokens; dropped ones never drawn.
    double chi2 = 0.0;
    int dof = -1;
    for (size_t i = 0; i < c.vocab; ++i) {
      if (want[i] == 0.0) {
        ASSERT_EQ(seen[i], 0) << "dropped token " << i << " drawn, vocab " << c.vocab;
        continue;
      }
      const double expected = want[i] * kDraws;
      chi2 += (seen[i] - expected) * (seen[i] - expected) / expected;
      ++dof;
    }
    ASSERT_GT(dof, 5);
    // Mean dof, sd sqrt(2 dof): six sd is far outside chance, yet a wrong
    // kept set or a skewed walk (even 1% on a tenth of the tokens) exceeds it.
    EXPECT_LT(chi2, dof + 6.0 * std::sqrt(2.0 * dof)) << "vocab " << c.vocab << " kept " << dof + 1;
  }
}

TEST(SamplerTest, LogprobsUseTheRawLogitEvenOfAPenalisedToken) {
  SamplingParams p = Greedy();
  p.logprobs = 5;
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 0.5f;
  std::vector<float> base = NormalRow(49152, 5, 2.0f);
  base[3] = 30.0f;  // in the prompt: 30 / 1.5 = 20 still wins
  base[9] = 19.0f;   // in the prompt too: ranks by its raw logit in top_logprobs
  base[11] = 19.0f;  // tied with 9: 9 lists first
  const std::vector<int32_t> prompt = {3, 9};
  SequenceSampler s(p, prompt, 0);
  std::vector<float> logits = base;
  const SampledToken t = s.Sample(logits);
  double mx = -INFINITY, sum = 0.0;
  for (float v : base) mx = std::max<double>(mx, v);
  for (float v : base) sum += std::exp(v - mx);
  const double lse = mx + std::log(sum);
  EXPECT_EQ(t.token_id, 3);
  EXPECT_NEAR(t.logprob, 30.0 - lse, 1e-6);
  EXPECT_FLOAT_EQ(logits[3], 20.0f);  // penalised in place
  ASSERT_EQ(t.top_logprobs.size(), 5u);
  EXPECT_EQ(t.top_logprobs[0].first, 3);
  EXPECT_EQ(t.top_logprobs[1].first, 9);
  EXPECT_EQ(t.top_logprobs[2].first, 11);
  for (const auto& [id, lp] : t.top_logprobs) EXPECT_NEAR(lp, base[id] - lse, 1e-6) << id;
  EXPECT_GE(t.top_logprobs[3].second, t.top_logprobs[4].second);
}

TEST(SamplerTest, ObserveKeepsTheStreamInStep) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  p.seed = 5;
  const std::vector<float> base = NormalRow(4096, 3, 0.5f);
  SequenceSampler a(p, {}, 0), b(p, {}, 0);
  std::vector<int32_t> first;
  for (int i = 0; i < 12; ++i) {
    std::vector<float> row = base;
    first.push_back(a.Sample(row).token_id);
  }
  for (int i = 0; i < 6; ++i) b.Observe(first[i]);
  for (int i = 6; i < 12; ++i) {
    std::vector<float> row = base;
    EXPECT_EQ(b.Sample(row).token_id, first[i]) << i;
  }
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
