// Text format 0.0.4 primitives: values, escaping, sample lines, label rules.
#include <cmath>
#include <limits>

#include "common/metrics/labels.h"
#include "common/metrics/text_format.h"
#include "gtest/gtest.h"

namespace tandem::metrics {
namespace {

TEST(FormatValueTest, SpecialValuesAsPrometheusSpellsThem) {
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
}

TEST(FormatValueTest, ShortestRoundTripText) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(1), "1");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(0.0025), "0.0025");
  EXPECT_EQ(FormatValue(60), "60");
  EXPECT_EQ(FormatValue(123456789), "123456789");
  EXPECT_EQ(FormatValue(9007199254740992.0), "9007199254740992");
  EXPECT_EQ(FormatValue(1e-5), "1e-05");
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(0.1 + 0.2), "0.30000000000000004");  // exact, not rounded to 0.3
}

TEST(EscapeTest, LabelValueEscapesBackslashQuoteNewline) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeLabelValue("tab\tand ünïcode"), "tab\tand ünïcode");
}

TEST(EscapeTest, HelpEscapesBackslashAndNewlineButNotQuotes) {
  EXPECT_EQ(EscapeHelp("say \"hi\"\\now\nbye"), "say \"hi\"\\\\now\\nbye");
}

TEST(AppendSampleTest, LinesWithAndWithoutLabels) {
  std::string out;
  AppendSample("x_total", {}, 3, &out);
  AppendSample("x_total", {{"a", "1"}, {"b", "q\""}}, 0.5, &out);
  AppendSample("h_bucket", {}, 7, &out, "+Inf");
  AppendSample("h_bucket", {{"a", "1"}}, 2, &out, "0.1");
  EXPECT_EQ(out,
            "x_total 3\n"
            "x_total{a=\"1\",b=\"q\\\"\"} 0.5\n"
            "h_bucket{le=\"+Inf\"} 7\n"
            "h_bucket{a=\"1\",le=\"0.1\"} 2\n");
}

TEST(LabelsTest, MetricNames) {
  EXPECT_TRUE(ValidateMetricName("tandem_requests_total").ok());
  EXPECT_TRUE(ValidateMetricName("job:rate5m").ok());
  EXPECT_TRUE(ValidateMetricName("_x9").ok());
  EXPECT_EQ(ValidateMetricName("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMetricName("9lives").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMetricName("a-b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMetricName("a b").code(), absl::StatusCode::kInvalidArgument);
}

TEST(LabelsTest, LabelNames) {
  EXPECT_TRUE(ValidateLabelName("status").ok());
  EXPECT_TRUE(ValidateLabelName("_x1").ok());
  EXPECT_EQ(ValidateLabelName("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateLabelName("__name__").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateLabelName("a:b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateLabelName("1a").code(), absl::StatusCode::kInvalidArgument);
}

TEST(LabelsTest, CanonicalFormIsSortedAndRejectsDuplicatesAndReserved) {
  absl::StatusOr<Labels> c = CanonicalLabels({{"worker", "d0"}, {"role", "decode"}, {"a", ""}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c, (Labels{{"a", ""}, {"role", "decode"}, {"worker", "d0"}}));
  absl::StatusOr<Labels> dup = CanonicalLabels({{"a", "1"}, {"b", "2"}, {"a", "3"}});
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dup.status().message().find("'a' given twice"), std::string::npos) << dup.status();
  EXPECT_EQ(CanonicalLabels({{"le", "1"}}, "le").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CanonicalLabels({{"le", "1"}}).ok());
}

}  // namespace
}  // namespace tandem::metrics
