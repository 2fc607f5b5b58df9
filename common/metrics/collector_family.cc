// Collector metrics (see collector_family.h). Thread-safe.
#include "common/metrics/collector_family.h"

#include <map>

#include "common/metrics/text_format.h"

namespace tandem::metrics {

void CollectorFamily::AppendTo(std::string* out) const {
  absl::MutexLock lock(&mu_);
  std::map<Labels, double> children;  // canonical labels → value, sorted as every family writes them
  for (Sample& s : collect_()) {
    absl::StatusOr<Labels> canonical = CanonicalLabels(std::move(s.labels));
    if (canonical.ok()) children.try_emplace(*std::move(canonical), s.value);
  }
  if (children.empty()) return;
  AppendHeader(name(), help(), kind_ == Kind::kCounter ? "counter" : "gauge", out);
  for (const auto& [labels, value] : children) AppendSample(name(), labels, value, out);
}

}  // namespace tandem::metrics
