// Prometheus text format 0.0.4 primitives (see text_format.h). Stateless.
#include "common/metrics/text_format.h"

#include <charconv>
#include <cmath>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace tandem::metrics {

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Shortest round-trip form: exact (a scrape loses nothing) and short.
  char buf[64];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, r.ptr);
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (const char c : help) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

void AppendHeader(absl::string_view name, absl::string_view help, absl::string_view type, std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ", name, " ", type, "\n");
}

void AppendSample(absl::string_view name, const Labels& labels, double value, std::string* out, absl::string_view le) {
  out->append(name.data(), name.size());
  if (!labels.empty() || !le.empty()) {
    out->push_back('{');
    bool first = true;
    for (const auto& [label, label_value] : labels) {
      absl::StrAppend(out, first ? "" : ",", label, "=\"", EscapeLabelValue(label_value), "\"");
      first = false;
    }
    if (!le.empty()) absl::StrAppend(out, first ? "" : ",", "le=\"", le, "\"");
    out->push_back('}');
  }
  absl::StrAppend(out, " ", FormatValue(value), "\n");
}

}  // namespace tandem::metrics
