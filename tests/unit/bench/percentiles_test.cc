// Percentiles and summaries against hand-computed values (linear
// interpolation between closest ranks, numpy's default).
#include "bench/load/percentiles.h"

#include "gtest/gtest.h"

namespace tandem::bench {
namespace {

TEST(BenchPercentilesTest, InterpolatesBetweenRanks) {
  const std::vector<double> v = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(PercentileOfSorted(v, 0), 1);
  EXPECT_DOUBLE_EQ(PercentileOfSorted(v, 50), 2.5);   // position 1.5
  EXPECT_DOUBLE_EQ(PercentileOfSorted(v, 90), 3.7);   // position 2.7
  EXPECT_DOUBLE_EQ(PercentileOfSorted(v, 99), 3.97);  // position 2.97
  EXPECT_DOUBLE_EQ(PercentileOfSorted(v, 100), 4);
}

TEST(BenchPercentilesTest, SummarizeSortsFirst) {
  const LatencySummary s = Summarize({4, 1, 3, 2});
  EXPECT_EQ(s.count, 4);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.p50, 2.5);
  EXPECT_DOUBLE_EQ(s.p90, 3.7);
  EXPECT_DOUBLE_EQ(s.p99, 3.97);
}

TEST(BenchPercentilesTest, OneValueIsEveryPercentile) {
  const LatencySummary s = Summarize({7.5});
  EXPECT_EQ(s.count, 1);
  EXPECT_DOUBLE_EQ(s.mean, 7.5);
  EXPECT_DOUBLE_EQ(s.p50, 7.5);
  EXPECT_DOUBLE_EQ(s.p99, 7.5);
}

TEST(BenchPercentilesTest, EmptySampleIsAllZero) {
  const LatencySummary s = Summarize({});
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(s.mean, 0);
  EXPECT_EQ(s.p99, 0);
}

}  // namespace
}  // namespace tandem::bench
