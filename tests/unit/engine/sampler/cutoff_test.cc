// KeptWeights / LastKept: the kept set found by selection equals the one a
// full sort gives (the definition), over many random rows: flat, spread,
// peaked, heavily tied, with -inf; every filter combination.
#include "engine/sampler/cutoff.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/sampler/logit_math.h"
#include "gtest/gtest.h"

namespace tandem::sampling {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The definition, by sorting the whole row: order by logit descending, id
// ascending; the first top_k; of those the shortest prefix whose weight
// reaches top_p of their total (at least 1); of those the prefix with
// weight >= min_p. `w` are the softmax numerators KeptWeights uses.
std::vector<bool> SortedReference(const SamplingParams& p, const std::vector<float>& logits,
                                  const std::vector<float>& w) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  size_t keep = order.size();
  if (p.top_k > 0) keep = std::min<size_t>(keep, p.top_k);
  if (p.top_p < 1.0f) {
    double total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += w[order[i]];
    double taken = 0.0;
    size_t n = 0;
    while (n < keep && taken < p.top_p * total) taken += w[order[n++]];
    keep = std::max<size_t>(n, 1);
  }
  if (p.min_p > 0.0f) {
    size_t n = 1;
    while (n < keep && w[order[n]] >= p.min_p) ++n;
    keep = n;
  }
  std::vector<bool> kept(logits.size(), false);
  for (size_t i = 0; i < keep; ++i) kept[order[i]] = true;
  return kept;
}

enum class Shape { kFlat, kSpread, kPeaked, kTied, kAllEqual, kNegInf, kMostlyNegInf, kGeometric };

std::vector<float> MakeRow(Shape shape, size_t vocab, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> row(vocab);
  for (size_t i = 0; i < vocab; ++i) {
    const float z = normal(rng);
    switch (shape) {
      case Shape::kFlat: row[i] = 0.02f * z; break;  // a random-weight model
      case Shape::kSpread: row[i] = 3.0f * z; break;
      case Shape::kPeaked: row[i] = z + (unit(rng) < 0.001f ? 12.0f + 4.0f * unit(rng) : 0.0f); break;
      case Shape::kTied: row[i] = std::round(2.0f * z) / 2.0f; break;  // ~15 distinct values
      case Shape::kAllEqual: row[i] = 1.5f; break;
      case Shape::kNegInf: row[i] = unit(rng) < 0.3f ? kNegInf : z; break;
      case Shape::kMostlyNegInf: row[i] = kNegInf; break;
      case Shape::kGeometric: row[i] = std::ldexp(1.0f, -static_cast<int>(i % 140)); break;  // deep buckets
    }
  }
  if (shape == Shape::kMostlyNegInf) {
    for (int k = 0; k < 3; ++k) row[rng() % vocab] = normal(rng);
  }
  return row;
}

TEST(CutoffTest, KeptSetEqualsTheSortedDefinition) {
  const Shape shapes[] = {Shape::kFlat,   Shape::kSpread,       Shape::kPeaked,   Shape::kTied,
                          Shape::kAllEqual, Shape::kNegInf, Shape::kMostlyNegInf, Shape::kGeometric};
  const size_t vocabs[] = {49152, 3001, 37};
  const float temperatures[] = {0.7f, 1.0f, 2.5f};
  const int32_t top_ks[] = {0, 1, 40, 2999, 30000};
  // Not round fractions: a tied row's cumulative weight would otherwise land
  // exactly on top_p * total, where the summation order decides.
  const float top_ps[] = {1.0f, 0.95f, 0.3f, 0.999f, 0.01f};
  const float min_ps[] = {0.0f, 0.05f, 0.7f};
  std::mt19937_64 rng(20240611);
  int cases = 0, partial = 0;
  for (Shape shape : shapes) {
    for (size_t vocab : vocabs) {
      for (int rep = 0; rep < (vocab > 10000 ? 6 : 20); ++rep) {
        const std::vector<float> logits = MakeRow(shape, vocab, rng);
        SamplingParams p;
        p.temperature = temperatures[rng() % 3];
        p.top_k = top_ks[rng() % 5];
        p.top_p = top_ps[rng() % 5];
        p.min_p = min_ps[rng() % 3];
        std::vector<float> w(vocab), kept_w(vocab);
        ScaledExp(logits, p.temperature, MaxOf(logits), w);
        const std::vector<bool> want = SortedReference(p, logits, w);
        const std::optional<Cut> cut = KeptWeights(p, logits, kept_w);
        const std::string where = "shape " + std::to_string(static_cast<int>(shape)) + " vocab " +
                                  std::to_string(vocab) + " rep " + std::to_string(rep);
        size_t num_kept = 0;
        for (size_t i = 0; i < vocab; ++i) {
          const bool kept = !cut || cut->Keeps(logits[i], static_cast<int32_t>(i));
          ASSERT_EQ(kept, want[i]) << where << " token " << i;
          ASSERT_EQ(kept_w[i], kept ? w[i] : 0.0f) << where << " token " << i;
          num_kept += kept;
        }
        ++cases;
        partial += num_kept > 1 && num_kept < vocab;
      }
    }
  }
  EXPECT_GT(partial, cases / 3);  // the grid does exercise real cuts (47% when written)
}

TEST(CutoffTest, TiesAtTheCutKeepTheLowestIds) {
  // 1000 equal logits (more than the sorted-leaf size): top-k 300 keeps ids 0..299.
  std::vector<float> logits(1000, 0.25f);
  logits[700] = 1.0f;  // ranks first
  const std::optional<Cut> cut = LastKept(logits, {}, 300);
  ASSERT_TRUE(cut.has_value());
  EXPECT_EQ(cut->logit, 0.25f);
  EXPECT_EQ(cut->last_id, 298);  // 700, then 0..298
  EXPECT_TRUE(cut->Keeps(1.0f, 700));
  EXPECT_FALSE(cut->Keeps(0.25f, 299));
}

TEST(CutoffTest, LastKeptIsNulloptWhenTheTargetIsNeverReached) {
  std::vector<float> logits(500, 0.0f), w(500, 1.0f);
  EXPECT_FALSE(LastKept(logits, w, 500.5).has_value());
  EXPECT_TRUE(LastKept(logits, w, 500.0).has_value());
  EXPECT_FALSE(LastKept(logits, {}, 501).has_value());
}

TEST(CutoffTest, ZeroWeightTokensAreNeverLast) {
  // Weight sits on ids 0 and 999 only; the cut lands on one of them.
  std::vector<float> logits(1000), w(1000, 0.0f);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = -static_cast<float>(i);
  w[0] = 1.0f;
  w[999] = 1.0f;
  const std::optional<Cut> cut = LastKept(logits, w, 1.5);
  ASSERT_TRUE(cut.has_value());
  EXPECT_EQ(cut->last_id, 999);
}

TEST(CutoffTest, BeforeFirstBelowCutsJustAheadOfTheFirstFailingToken) {
  const std::vector<float> logits = {3.0f, 1.0f, 2.0f, 1.0f, 0.0f};
  const std::vector<float> w = {1.0f, 0.2f, 0.5f, 0.2f, 0.1f};
  const std::optional<Cut> cut = BeforeFirstBelow(logits, w, 0.3f);
  ASSERT_TRUE(cut.has_value());  // order 0, 2, 1, 3, 4: token 1 fails first
  EXPECT_EQ(cut->logit, 1.0f);
  EXPECT_EQ(cut->last_id, 0);
  EXPECT_TRUE(cut->Keeps(2.0f, 2));
  EXPECT_FALSE(cut->Keeps(1.0f, 1));
  EXPECT_FALSE(BeforeFirstBelow(logits, w, 0.05f).has_value());
}

TEST(CutoffTest, TighterPicksTheShorterPrefix) {
  EXPECT_EQ(Tighter(Cut{1.0f, 5}, Cut{2.0f, 9}).logit, 2.0f);
  EXPECT_EQ(Tighter(Cut{1.0f, 5}, Cut{1.0f, 3}).last_id, 3);
  EXPECT_EQ(Tighter(Cut{}, Cut{0.0f, 7}).last_id, 7);
}

}  // namespace
}  // namespace tandem::sampling
