// The sweep plot's gnuplot script (its data rows exactly) and PATH lookup.
// Drawing the PNG is covered end to end by tests/e2e/bench_test.py.
#include "bench/load/sweep_plot.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem::bench {
namespace {

using ::testing::HasSubstr;

TEST(BenchSweepPlotTest, ScriptCarriesOneDataRowPerPoint) {
  BenchReport a;
  a.output_throughput = 100;
  a.ttft_ms = {3, 10, 11, 12, 13};
  a.tpot_ms = {3, 2, 2.5, 3, 3.5};
  a.e2el_ms = {3, 50, 51, 52, 53};
  BenchReport b;  // no completed requests: latencies are missing, not 0
  b.output_throughput = 0;
  const std::string script = SweepPlotScript({{"rate=1", a}, {"rate=2", b}}, "out/it's.png");
  EXPECT_THAT(script, HasSubstr("\"rate=1\" 100 11 12 13 2.5 3 3.5 51 52 53\n"));
  EXPECT_THAT(script, HasSubstr("\"rate=2\" 0 NaN NaN NaN NaN NaN NaN NaN NaN NaN\n"));
  EXPECT_THAT(script, HasSubstr("set output 'out/it''s.png'\n"));
  EXPECT_THAT(script, HasSubstr("using 2:3 "));   // TTFT p50
  EXPECT_THAT(script, HasSubstr("using 2:11 "));  // E2E p99
}

TEST(BenchSweepPlotTest, FindsProgramsOnPath) {
  auto sh = FindOnPath("sh");
  ASSERT_TRUE(sh.ok());
  EXPECT_THAT(*sh, ::testing::EndsWith("/sh"));
  EXPECT_EQ(FindOnPath("no-such-program-tandem").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tandem::bench
