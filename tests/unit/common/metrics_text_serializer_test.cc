// TextSerializer: prometheus-cpp's data model in text format 0.0.4 with
// values that read back exactly (where prometheus::TextSerializer's 16
// digits do not), every metric type, escaping, the implicit +Inf bucket.
#include <cmath>
#include <cstdlib>
#include <limits>
#include <locale>
#include <sstream>
#include <string>
#include <vector>

#include "common/metrics/text_serializer.h"
#include "gtest/gtest.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace tandem::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(const std::string& name, MetricType type, std::vector<ClientMetric> metrics) {
  MetricFamily f;
  f.name = name;
  f.help = "Help.";
  f.type = type;
  f.metric = std::move(metrics);
  return f;
}

ClientMetric Gauge(double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

TEST(TextSerializerTest, ValuesReadBackExactly) {
  // 1 KV block of 21845 in use: the ratio needs 17 significant digits.
  const double ratio = 1.0 / 21845.0;
  EXPECT_EQ(FormatValue(ratio), "4.5777065690089265e-05");
  EXPECT_EQ(std::strtod(FormatValue(ratio).c_str(), nullptr), ratio);
  // prometheus-cpp's own serializer does not read back (why this one exists).
  const std::string theirs = prometheus::TextSerializer().Serialize({Family("r", MetricType::Gauge, {Gauge(ratio)})});
  const std::string value = theirs.substr(theirs.rfind(' ') + 1);
  EXPECT_NE(std::strtod(value.c_str(), nullptr), ratio) << theirs;
  for (double v : {0.1, 1.0 / 3, 2.0 / 3, 1e-300, 123456789.123456789, 0.005, 1e21, -0.0, 42.0}) {
    EXPECT_EQ(std::strtod(FormatValue(v).c_str(), nullptr), v) << FormatValue(v);
  }
  EXPECT_EQ(FormatValue(0.005), "0.005");
  EXPECT_EQ(FormatValue(1e-05), "1e-05");
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
}

TEST(TextSerializerTest, EveryTypeExactly) {
  ClientMetric counter;
  counter.label = {{"a", "x"}, {"b", "y"}};
  counter.counter.value = 3;
  ClientMetric untyped;
  untyped.untyped.value = 0.5;
  untyped.timestamp_ms = 1700000000000;
  ClientMetric histogram;
  histogram.label = {{"role", "decode"}};
  histogram.histogram.sample_count = 3;
  histogram.histogram.sample_sum = 1.75;
  histogram.histogram.bucket = {{1, 0.25}, {2, 1.0}, {3, std::numeric_limits<double>::infinity()}};
  ClientMetric no_inf;  // a histogram whose buckets stop short of +Inf gets one
  no_inf.histogram.sample_count = 5;
  no_inf.histogram.sample_sum = 10;
  no_inf.histogram.bucket = {{4, 2.5}};
  ClientMetric summary;
  summary.summary.sample_count = 2;
  summary.summary.sample_sum = 3;
  summary.summary.quantile = {{0.5, 1}, {0.99, 2}};
  const std::vector<MetricFamily> families = {
      Family("c_total", MetricType::Counter, {counter}),
      Family("empty", MetricType::Gauge, {}),
      Family("u", MetricType::Untyped, {untyped}),
      Family("h_seconds", MetricType::Histogram, {histogram, no_inf}),
      Family("s", MetricType::Summary, {summary}),
  };
  EXPECT_EQ(TextSerializer().Serialize(families),
            "# HELP c_total Help.\n# TYPE c_total counter\nc_total{a=\"x\",b=\"y\"} 3\n"
            "# HELP u Help.\n# TYPE u untyped\nu 0.5 1700000000000\n"
            "# HELP h_seconds Help.\n# TYPE h_seconds histogram\n"
            "h_seconds_bucket{role=\"decode\",le=\"0.25\"} 1\n"
            "h_seconds_bucket{role=\"decode\",le=\"1\"} 2\n"
            "h_seconds_bucket{role=\"decode\",le=\"+Inf\"} 3\n"
            "h_seconds_sum{role=\"decode\"} 1.75\n"
            "h_seconds_count{role=\"decode\"} 3\n"
            "h_seconds_bucket{le=\"2.5\"} 4\n"
            "h_seconds_bucket{le=\"+Inf\"} 5\n"
            "h_seconds_sum 10\n"
            "h_seconds_count 5\n"
            "# HELP s Help.\n# TYPE s summary\n"
            "s{quantile=\"0.5\"} 1\ns{quantile=\"0.99\"} 2\ns_sum 3\ns_count 2\n");
}

TEST(TextSerializerTest, EscapesHelpAndLabelValues) {
  MetricFamily f = Family("g", MetricType::Gauge, {Gauge(1, {{"path", "C:\\dir\\\"f\"\nnext"}})});
  f.help = "Line one\nline \\two\\ \"quoted\".";
  EXPECT_EQ(TextSerializer().Serialize({f}),
            "# HELP g Line one\\nline \\\\two\\\\ \"quoted\".\n"
            "# TYPE g gauge\n"
            "g{path=\"C:\\\\dir\\\\\\\"f\\\"\\nnext\"} 1\n");
}

TEST(TextSerializerTest, TheStreamsLocaleDoesNotGroupDigits) {
  struct Grouping : std::numpunct<char> {
    char do_thousands_sep() const override { return ','; }
    std::string do_grouping() const override { return "\3"; }
  };
  std::ostringstream out;
  out.imbue(std::locale(out.getloc(), new Grouping));
  ClientMetric m;
  m.histogram.sample_count = 1234567;
  m.histogram.sample_sum = 1;
  TextSerializer().Serialize(out, {Family("h", MetricType::Histogram, {m})});
  EXPECT_EQ(out.str(), "# HELP h Help.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1234567\nh_sum 1\nh_count 1234567\n");
  out.str("");
  out << 1234567;  // and the stream's own locale is back
  EXPECT_EQ(out.str(), "1,234,567");
}

}  // namespace
}  // namespace tandem::metrics
