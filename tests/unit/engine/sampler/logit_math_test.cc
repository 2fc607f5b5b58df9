// The sampler's whole-row loops against scalar double references, at every
// tail length (the last partial vector takes the padded path).
#include "engine/sampler/logit_math.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::sampling {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> Row(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

TEST(LogitMathTest, ScaledExpIsWithinTwoUlpOfDoubleExp) {
  for (size_t n : {1, 7, 8, 9, 31, 1000, 49152}) {
    std::vector<float> x = Row(n, n, 20.0f);
    if (n > 1) x[0] = kNegInf;
    if (n > 3) x[3] = -200.0f;
    const float mx = MaxOf(x);
    for (float t : {1.0f, 0.8f, 3.0f}) {
      std::vector<float> w(n, -1.0f);
      ScaledExp(x, t, mx, w);
      for (size_t i = 0; i < n; ++i) {
        const float arg = x[i] / t - mx / t;  // the argument in float, as ScaledExp forms it
        const double want = std::exp(static_cast<double>(arg));
        if (want < std::numeric_limits<float>::min()) {
          EXPECT_EQ(w[i], 0.0f) << i;
        } else {
          EXPECT_NEAR(w[i], want, 2.5 * want * std::numeric_limits<float>::epsilon()) << "n " << n << " i " << i;
        }
      }
      EXPECT_EQ(w[std::distance(x.begin(), std::max_element(x.begin(), x.end()))], 1.0f);
    }
  }
}

TEST(LogitMathTest, LogSumExpMatchesDoubleToOneInAMillion) {
  for (size_t n : {1, 5, 8, 13, 49152, 128256}) {
    for (float scale : {0.02f, 1.0f, 30.0f}) {
      std::vector<float> x = Row(n, n + 7, scale);
      if (n > 10) x[10] = kNegInf;
      double mx = -INFINITY, sum = 0.0;
      for (float v : x) mx = std::max<double>(mx, v);
      for (float v : x) sum += std::exp(v - mx);
      const double want = mx + std::log(sum);
      EXPECT_NEAR(LogSumExp(x), want, 1e-6 * std::max(1.0, std::abs(want))) << n << " " << scale;
    }
  }
  EXPECT_EQ(LogSumExp(std::vector<float>(9, kNegInf)), -INFINITY);
}

TEST(LogitMathTest, MaxAndArgMaxTakeTheLowestIdOnTies) {
  for (size_t n : {1, 8, 17, 1000}) {
    std::vector<float> x = Row(n, n, 1.0f);
    const size_t a = n / 3, b = n - 1;
    x[a] = x[b] = 9.0f;
    EXPECT_EQ(MaxOf(x), 9.0f);
    EXPECT_EQ(ArgMax(x), static_cast<int32_t>(a)) << n;
    x[a] = 8.0f;
    EXPECT_EQ(ArgMax(x), static_cast<int32_t>(b)) << n;  // in the padded tail for n = 17
  }
  EXPECT_EQ(ArgMax(std::vector<float>(11, kNegInf)), 0);
  EXPECT_EQ(ArgMax(std::vector<float>(11, 2.0f)), 0);
  std::vector<float> nan_first = {std::nanf(""), 1.0f, 3.0f};
  EXPECT_EQ(MaxOf(nan_first), 3.0f);
  EXPECT_EQ(ArgMax(nan_first), 2);
}

TEST(LogitMathTest, SumOfIsExactForIntegers) {
  std::vector<float> x(1003);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  EXPECT_EQ(SumOf(x), 1002.0 * 1003.0 / 2.0);
}

TEST(LogitMathTest, DrawByWeightWalksIdsInOrderAndSkipsZeros) {
  std::vector<float> w(3000, 0.0f);
  w[5] = 1.0f;
  w[1500] = 2.0f;
  w[2999] = 1.0f;
  EXPECT_EQ(DrawByWeight(w, 0.0), 5);
  EXPECT_EQ(DrawByWeight(w, 0.2499), 5);
  EXPECT_EQ(DrawByWeight(w, 0.25), 1500);
  EXPECT_EQ(DrawByWeight(w, 0.7499), 1500);
  EXPECT_EQ(DrawByWeight(w, 0.75), 2999);
  EXPECT_EQ(DrawByWeight(w, std::nextafter(1.0, 0.0)), 2999);
  EXPECT_EQ(DrawByWeight(std::vector<float>(10, 0.0f), 0.5), -1);
}

}  // namespace
}  // namespace tandem::sampling
