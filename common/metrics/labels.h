// Label sets and name rules of the Prometheus data model: which metric and
// label names are legal, and the one canonical form of a label set (sorted
// by name, no duplicates) that families key their children by, so
// {{"a","1"},{"b","2"}} and {{"b","2"},{"a","1"}} are the same child.
// Thread-safety: stateless functions.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tandem::metrics {

// A label set as callers write it: family.Add({{"status", "ok"}}). Values may
// be any UTF-8 text (the exposition escapes them); names follow the rules below.
using Labels = std::vector<std::pair<std::string, std::string>>;

// Metric family names: [a-zA-Z_:][a-zA-Z0-9_:]*. InvalidArgument otherwise.
[[nodiscard]] absl::Status ValidateMetricName(absl::string_view name);

// Label names: [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved for
// Prometheus itself). InvalidArgument otherwise.
[[nodiscard]] absl::Status ValidateLabelName(absl::string_view name);

// `labels` sorted by name, every name validated. InvalidArgument names the
// offending label when a name is invalid, repeated, or in `reserved` (a
// histogram reserves "le", which its bucket lines add).
[[nodiscard]] absl::StatusOr<Labels> CanonicalLabels(Labels labels, absl::string_view reserved = {});

}  // namespace tandem::metrics
