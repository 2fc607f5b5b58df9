// The pieces of the Prometheus text exposition format 0.0.4 that every
// metric type writes: sample values, escaped label values and HELP text, and
// whole sample lines. Kept apart from the metric types so the exact bytes are
// decided (and tested) in one place.
// Thread-safety: stateless functions.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "common/metrics/labels.h"

namespace tandem::metrics {

// The content type a scrape answer carries.
inline constexpr absl::string_view kTextFormatContentType = "text/plain; version=0.0.4; charset=utf-8";

// A sample value as Prometheus parses it (Go's strconv.ParseFloat): "+Inf",
// "-Inf", "NaN", else the shortest text that reads back to the same double
// ("0.005", "1e-05", "60", "1e+21").
std::string FormatValue(double value);

// A label value inside double quotes: backslash → \\, " → \", newline → \n.
std::string EscapeLabelValue(absl::string_view value);

// HELP text: backslash → \\, newline → \n (quotes stay as they are).
std::string EscapeHelp(absl::string_view help);

// Appends `# HELP name help` and `# TYPE name type` lines.
void AppendHeader(absl::string_view name, absl::string_view help, absl::string_view type, std::string* out);

// Appends one sample line: name{labels} value. `labels` is canonical; `le`,
// when not empty, is added last as {...,le="<le>"} (histogram buckets).
void AppendSample(absl::string_view name, const Labels& labels, double value, std::string* out,
                  absl::string_view le = {});

}  // namespace tandem::metrics
