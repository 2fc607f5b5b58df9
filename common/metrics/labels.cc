// Name rules and canonical label sets (see labels.h). Stateless.
#include "common/metrics/labels.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem::metrics {
namespace {

bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

absl::Status ValidateMetricName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("metric name is empty");
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = IsAsciiLetter(c) || c == '_' || c == ':' || (i > 0 && IsAsciiDigit(c));
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric name '", name, "': character ", i, " is not allowed ([a-zA-Z_:][a-zA-Z0-9_:]*)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLabelName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("label name is empty");
  if (name.substr(0, 2) == "__") {
    return absl::InvalidArgumentError(absl::StrCat("label name '", name, "': names starting with __ are reserved"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!(IsAsciiLetter(c) || c == '_' || (i > 0 && IsAsciiDigit(c)))) {
      return absl::InvalidArgumentError(
          absl::StrCat("label name '", name, "': character ", i, " is not allowed ([a-zA-Z_][a-zA-Z0-9_]*)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Labels> CanonicalLabels(Labels labels, absl::string_view reserved) {
  for (const auto& [name, value] : labels) {
    if (absl::Status st = ValidateLabelName(name); !st.ok()) return st;
    if (!reserved.empty() && name == reserved) {
      return absl::InvalidArgumentError(absl::StrCat("label name '", name, "' is reserved for this metric type"));
    }
  }
  std::sort(labels.begin(), labels.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < labels.size(); ++i) {
    if (labels[i].first == labels[i - 1].first) {
      return absl::InvalidArgumentError(absl::StrCat("label name '", labels[i].first, "' given twice"));
    }
  }
  return labels;
}

}  // namespace tandem::metrics
