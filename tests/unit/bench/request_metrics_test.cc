// Per-request metrics from hand-made chunk timing traces.
#include "bench/load/request_metrics.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/bench/trace_fixtures.h"

namespace tandem::bench {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::kMs;

TEST(BenchRequestMetricsTest, SpreadsAChunksGapOverItsTokens) {
  const RequestMetrics m = ComputeRequestMetrics(testing::TraceA());
  EXPECT_EQ(m.output_tokens, 5);
  EXPECT_EQ(m.ttft_ms, 10.0);
  EXPECT_THAT(m.itls_ms, ElementsAre(20.0, 10.0, 10.0, 10.0));
  EXPECT_EQ(m.e2e_ms, 110.0);
  EXPECT_EQ(m.tpot_ms, 25.0);
}

TEST(BenchRequestMetricsTest, FirstChunksExtraTokensHaveZeroItl) {
  const RequestMetrics m = ComputeRequestMetrics(testing::TraceB());
  EXPECT_EQ(m.output_tokens, 4);
  EXPECT_EQ(m.ttft_ms, 20.0);
  EXPECT_THAT(m.itls_ms, ElementsAre(0.0, 10.0, 10.0));
  EXPECT_EQ(m.e2e_ms, 40.0);
  ASSERT_TRUE(m.tpot_ms.has_value());
  EXPECT_DOUBLE_EQ(*m.tpot_ms, 20.0 / 3.0);
}

TEST(BenchRequestMetricsTest, OneTokenHasNoTpotNorItl) {
  const RequestMetrics m = ComputeRequestMetrics(testing::TraceC());
  EXPECT_EQ(m.output_tokens, 1);
  EXPECT_EQ(m.ttft_ms, 8.0);
  EXPECT_THAT(m.itls_ms, IsEmpty());
  EXPECT_EQ(m.e2e_ms, 9.0);
  EXPECT_FALSE(m.tpot_ms.has_value());
}

TEST(BenchRequestMetricsTest, EmptyChunksAreNotTokenArrivals) {
  // A 0-token chunk at 15 ms neither starts TTFT nor splits the 10 -> 30 gap.
  const RequestTrace t{0, 30 * kMs, {{5 * kMs, 0}, {10 * kMs, 1}, {15 * kMs, 0}, {30 * kMs, 1}}};
  const RequestMetrics m = ComputeRequestMetrics(t);
  EXPECT_EQ(m.ttft_ms, 10.0);
  EXPECT_THAT(m.itls_ms, ElementsAre(20.0));
  EXPECT_EQ(m.tpot_ms, 20.0);
}

TEST(BenchRequestMetricsTest, NoTokensNoTtft) {
  const RequestMetrics m = ComputeRequestMetrics({0, 3 * kMs, {{2 * kMs, 0}}});
  EXPECT_EQ(m.output_tokens, 0);
  EXPECT_FALSE(m.ttft_ms.has_value());
  EXPECT_FALSE(m.tpot_ms.has_value());
  EXPECT_THAT(m.itls_ms, IsEmpty());
  EXPECT_EQ(m.e2e_ms, 3.0);
}

}  // namespace
}  // namespace tandem::bench
