// The seeded random source: determinism and bounds (the distributions'
// moments are checked through the arrival and dataset tests).
#include "bench/load/rng.h"

#include <set>

#include "gtest/gtest.h"

namespace tandem::bench {
namespace {

TEST(BenchRngTest, SameSeedSameStream) {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const double x = a.Uniform01();
    EXPECT_EQ(x, b.Uniform01());
    differs |= x != c.Uniform01();
  }
  EXPECT_TRUE(differs);
}

TEST(BenchRngTest, UniformIntCoversExactlyTheInclusiveRange) {
  Rng rng(7);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int64_t v = rng.UniformInt(-2, 3);
    ASSERT_GE(v, -2);
    ASSERT_LE(v, 3);
    seen.insert(v);
  }
  EXPECT_EQ(seen, (std::set<int64_t>{-2, -1, 0, 1, 2, 3}));
  EXPECT_EQ(rng.UniformInt(5, 5), 5);
}

TEST(BenchRngTest, Uniform01StaysInHalfOpenUnitInterval) {
  Rng rng(1);
  for (int i = 0; i < 10000; ++i) {
    const double u = rng.Uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

}  // namespace
}  // namespace tandem::bench
