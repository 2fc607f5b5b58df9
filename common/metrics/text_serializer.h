// The Prometheus text exposition format 0.0.4 for prometheus-cpp's data
// model (MetricFamily / ClientMetric), with values that read back exactly.
//
// Why not prometheus::TextSerializer: prometheus-cpp (1.0.1 in Debian 12,
// and upstream still) writes doubles with 16 significant digits, which does
// not round-trip every double: tandem_kv_cache_usage_ratio = 1/21845 comes
// back from a scrape one ulp off, so "usage == used / (used + free)" fails
// in Prometheus (tests/e2e/metrics_test.py checks exactly that). This one
// writes the shortest text that parses back to the same double, and also
// escapes HELP text (prometheus-cpp 1.0.1 writes it as given).
//
// Layout: "# HELP" and "# TYPE" per family, then its samples in the order
// given (metrics::Registry sorts them); histogram buckets (cumulative,
// ending with le="+Inf"), then _sum and _count; summary quantiles, then
// _sum and _count. A family without samples writes nothing.
// Thread-safety: stateless.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "prometheus/metric_family.h"
#include "prometheus/serializer.h"

namespace tandem::metrics {

// The Content-Type of a scrape answer in this format.
inline constexpr char kTextFormatContentType[] = "text/plain; version=0.0.4; charset=utf-8";

class TextSerializer final : public prometheus::Serializer {
 public:
  using prometheus::Serializer::Serialize;
  void Serialize(std::ostream& out, const std::vector<prometheus::MetricFamily>& families) const override;
};

// A sample value: "NaN", "+Inf", "-Inf", or the shortest decimal that reads
// back to `value` ("0.005", "1e-05", "1e+21", "42").
std::string FormatValue(double value);

}  // namespace tandem::metrics
