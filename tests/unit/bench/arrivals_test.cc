// Arrival schedules: determinism, order, and the gap distribution's moments.
//
// Statistical tolerances: each moment test draws n = 200,000 gaps and allows
// at least 4.5 standard errors of the estimate (worked out per test), so a
// correct generator fails with probability below 1e-5 for a random seed.
// The seeds are fixed, so the tests are deterministic.
#include "bench/load/arrivals.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace tandem::bench {
namespace {

constexpr int64_t kSamples = 200'000;

struct Moments {
  double mean = 0;
  double variance = 0;
};

Moments GapMoments(const ArrivalConfig& config, uint64_t seed) {
  const std::vector<double> t = ArrivalOffsets(config, kSamples, seed);
  std::vector<double> gaps(t.size());
  double prev = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    gaps[i] = t[i] - prev;
    prev = t[i];
  }
  Moments m;
  for (double g : gaps) m.mean += g;
  m.mean /= static_cast<double>(gaps.size());
  for (double g : gaps) m.variance += (g - m.mean) * (g - m.mean);
  m.variance /= static_cast<double>(gaps.size() - 1);
  return m;
}

TEST(BenchArrivalsTest, InfiniteRateSendsEverythingAtZero) {
  const ArrivalConfig config{std::numeric_limits<double>::infinity(), 1.0};
  ASSERT_TRUE(config.Validate().ok());
  EXPECT_EQ(ArrivalOffsets(config, 5, 1), std::vector<double>(5, 0.0));
}

TEST(BenchArrivalsTest, DeterministicPerSeedAndNonDecreasing) {
  const ArrivalConfig config{3.0, 1.0};
  const std::vector<double> a = ArrivalOffsets(config, 1000, 9);
  EXPECT_EQ(a, ArrivalOffsets(config, 1000, 9));
  EXPECT_NE(a, ArrivalOffsets(config, 1000, 10));
  EXPECT_GT(a[0], 0.0);
  for (size_t i = 1; i < a.size(); ++i) ASSERT_GE(a[i], a[i - 1]);
}

TEST(BenchArrivalsTest, PoissonGapsAreExponentialWithMeanOneOverRate) {
  // Exponential(mean 0.25): standard error of the mean 0.25/sqrt(n) = 0.22%;
  // of the variance sqrt(8/n) = 0.63% relative.
  const Moments m = GapMoments({4.0, 1.0}, 1);
  EXPECT_NEAR(m.mean, 0.25, 0.25 * 0.01);
  EXPECT_NEAR(m.variance, 0.0625, 0.0625 * 0.03);
}

TEST(BenchArrivalsTest, BurstyGammaKeepsTheMeanAndWidensTheSpread) {
  // Gamma(shape 0.5), mean 0.1, variance mean^2 / shape = 0.02. Standard
  // errors: mean sqrt(2/n) = 0.32%, variance sqrt((2 + 6/shape)/n) = 0.84%.
  const Moments m = GapMoments({10.0, 0.5}, 2);
  EXPECT_NEAR(m.mean, 0.1, 0.1 * 0.02);
  EXPECT_NEAR(m.variance, 0.02, 0.02 * 0.05);
}

TEST(BenchArrivalsTest, RegularGammaNarrowsTheSpread) {
  // Gamma(shape 4), mean 0.5, variance 0.0625. Standard errors: mean
  // 0.5/sqrt(n) = 0.11%, variance sqrt((2 + 6/4)/n) = 0.42%.
  const Moments m = GapMoments({2.0, 4.0}, 3);
  EXPECT_NEAR(m.mean, 0.5, 0.5 * 0.01);
  EXPECT_NEAR(m.variance, 0.0625, 0.0625 * 0.03);
}

TEST(BenchArrivalsTest, RejectsBadRates) {
  EXPECT_FALSE((ArrivalConfig{0.0, 1.0}.Validate().ok()));
  EXPECT_FALSE((ArrivalConfig{-1.0, 1.0}.Validate().ok()));
  EXPECT_FALSE((ArrivalConfig{std::nan(""), 1.0}.Validate().ok()));
  EXPECT_FALSE((ArrivalConfig{1.0, 0.0}.Validate().ok()));
  EXPECT_FALSE((ArrivalConfig{1.0, std::numeric_limits<double>::infinity()}.Validate().ok()));
}

}  // namespace
}  // namespace tandem::bench
