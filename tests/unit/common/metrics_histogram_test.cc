// Histogram: bucket choice (le is inclusive), cumulative counts, +Inf, NaN.
#include <cmath>
#include <limits>
#include <vector>

#include "common/metrics/histogram.h"
#include "gtest/gtest.h"

namespace tandem::metrics {
namespace {

TEST(HistogramTest, CumulativeCountsWithInclusiveUpperBounds) {
  Histogram h({1, 2, 4});
  for (double v : {-3.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 4.5, 100.0}) h.Observe(v);
  const Histogram::Snapshot s = h.Collect();
  // <=1: -3, 0.5, 1 | <=2: +1.5, 2 | <=4: +3, 4 | +Inf: +4.5, 100
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{3, 5, 7, 9}));
  EXPECT_EQ(s.count, 9u);
  EXPECT_EQ(s.sum, 113.5);
}

TEST(HistogramTest, InfinityAndNanLandInTheInfBucket) {
  Histogram h({1});
  h.Observe(std::numeric_limits<double>::infinity());
  h.Observe(-std::numeric_limits<double>::infinity());
  EXPECT_EQ(h.Collect().cumulative, (std::vector<uint64_t>{1, 2}));
  h.Observe(std::nan(""));
  const Histogram::Snapshot s = h.Collect();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{1, 3}));
  EXPECT_TRUE(std::isnan(s.sum));
}

TEST(HistogramTest, NoBoundsMeansOnlyInf) {
  Histogram h({});
  h.Observe(0.25);
  h.Observe(0.5);
  std::string out;
  h.AppendTo("d_seconds", {{"k", "v"}}, &out);
  EXPECT_EQ(out,
            "d_seconds_bucket{k=\"v\",le=\"+Inf\"} 2\n"
            "d_seconds_sum{k=\"v\"} 0.75\n"
            "d_seconds_count{k=\"v\"} 2\n");
}

TEST(HistogramTest, UnobservedHistogramWritesZeros) {
  Histogram h({0.001, 60});
  std::string out;
  h.AppendTo("t", {}, &out);
  EXPECT_EQ(out,
            "t_bucket{le=\"0.001\"} 0\n"
            "t_bucket{le=\"60\"} 0\n"
            "t_bucket{le=\"+Inf\"} 0\n"
            "t_sum 0\n"
            "t_count 0\n");
}

TEST(HistogramTest, BoundValidation) {
  EXPECT_TRUE(ValidateBucketBounds(std::vector<double>{}).ok());
  EXPECT_TRUE(ValidateBucketBounds(std::vector<double>{-1, 0, 0.5}).ok());
  absl::Status st = ValidateBucketBounds(std::vector<double>{0.1, 0.2, 0.2});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("bucket bound 2 (0.2)"), std::string::npos) << st;
  st = ValidateBucketBounds(std::vector<double>{0.1, std::numeric_limits<double>::infinity()});
  EXPECT_NE(st.message().find("bucket bound 1 is +Inf"), std::string::npos) << st;
}

}  // namespace
}  // namespace tandem::metrics
