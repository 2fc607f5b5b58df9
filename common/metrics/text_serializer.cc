// Text format 0.0.4 with exact values (see text_serializer.h). Stateless.
#include "common/metrics/text_serializer.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <locale>

#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace tandem::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

void WriteEscaped(std::ostream& out, const std::string& text, bool quotes) {
  for (const char c : text) {
    switch (c) {
      case '\\': out << "\\\\"; break;
      case '\n': out << "\\n"; break;
      case '"':
        if (quotes) {
          out << "\\\"";
        } else {
          out << c;
        }
        break;
      default: out << c;
    }
  }
}

// name{labels[,extra="value"]} (no braces when there is no label at all).
void WriteName(std::ostream& out, const std::string& name, const ClientMetric& m, const char* extra_name = nullptr,
               const std::string& extra_value = "") {
  out << name;
  if (m.label.empty() && extra_name == nullptr) return;
  out << '{';
  const char* sep = "";
  for (const ClientMetric::Label& l : m.label) {
    out << sep << l.name << "=\"";
    WriteEscaped(out, l.value, true);
    out << '"';
    sep = ",";
  }
  if (extra_name != nullptr) out << sep << extra_name << "=\"" << extra_value << '"';
  out << '}';
}

void WriteTail(std::ostream& out, const ClientMetric& m) {
  if (m.timestamp_ms != 0) out << ' ' << m.timestamp_ms;
  out << '\n';
}

void WriteSample(std::ostream& out, const std::string& name, const ClientMetric& m, double value) {
  WriteName(out, name, m);
  out << ' ' << FormatValue(value);
  WriteTail(out, m);
}

void WriteCount(std::ostream& out, const std::string& name, const ClientMetric& m, uint64_t count) {
  WriteName(out, name, m);
  out << ' ' << count;
  WriteTail(out, m);
}

void WriteHistogram(std::ostream& out, const std::string& name, const ClientMetric& m) {
  const ClientMetric::Histogram& h = m.histogram;
  const std::string bucket = name + "_bucket";
  bool wrote_inf = false;
  for (const ClientMetric::Bucket& b : h.bucket) {
    WriteName(out, bucket, m, "le", FormatValue(b.upper_bound));
    out << ' ' << b.cumulative_count;
    WriteTail(out, m);
    wrote_inf = std::isinf(b.upper_bound) && b.upper_bound > 0;
  }
  if (!wrote_inf) {
    WriteName(out, bucket, m, "le", "+Inf");
    out << ' ' << h.sample_count;
    WriteTail(out, m);
  }
  WriteSample(out, name + "_sum", m, h.sample_sum);
  WriteCount(out, name + "_count", m, h.sample_count);
}

void WriteSummary(std::ostream& out, const std::string& name, const ClientMetric& m) {
  for (const ClientMetric::Quantile& q : m.summary.quantile) {
    WriteName(out, name, m, "quantile", FormatValue(q.quantile));
    out << ' ' << FormatValue(q.value);
    WriteTail(out, m);
  }
  WriteSample(out, name + "_sum", m, m.summary.sample_sum);
  WriteCount(out, name + "_count", m, m.summary.sample_count);
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Summary: return "summary";
    case MetricType::Histogram: return "histogram";
    case MetricType::Untyped: break;
  }
  return "untyped";
}

}  // namespace

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, r.ptr);
}

void TextSerializer::Serialize(std::ostream& out, const std::vector<MetricFamily>& families) const {
  const std::locale saved = out.imbue(std::locale::classic());  // counts without digit grouping
  for (const MetricFamily& f : families) {
    if (f.metric.empty()) continue;
    out << "# HELP " << f.name << ' ';
    WriteEscaped(out, f.help, false);
    out << "\n# TYPE " << f.name << ' ' << TypeName(f.type) << '\n';
    for (const ClientMetric& m : f.metric) {
      switch (f.type) {
        case MetricType::Counter: WriteSample(out, f.name, m, m.counter.value); break;
        case MetricType::Gauge: WriteSample(out, f.name, m, m.gauge.value); break;
        case MetricType::Untyped: WriteSample(out, f.name, m, m.untyped.value); break;
        case MetricType::Histogram: WriteHistogram(out, f.name, m); break;
        case MetricType::Summary: WriteSummary(out, f.name, m); break;
      }
    }
  }
  out.imbue(saved);
}

}  // namespace tandem::metrics
