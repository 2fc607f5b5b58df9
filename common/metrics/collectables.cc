// Scrape-time collectables (see collectables.h). Thread-safe.
#include "common/metrics/collectables.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/check_names.h"
#include "prometheus/client_metric.h"

namespace tandem::metrics {
namespace {

prometheus::ClientMetric Point(const Labels& labels, double value, ScrapeType type) {
  prometheus::ClientMetric m;
  m.label.reserve(labels.size());
  for (const auto& [name, label_value] : labels) m.label.push_back({name, label_value});
  if (type == ScrapeType::kCounter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return m;
}

prometheus::MetricFamily Header(const std::string& name, const std::string& help, ScrapeType type) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type == ScrapeType::kCounter ? prometheus::MetricType::Counter : prometheus::MetricType::Gauge;
  return family;
}

}  // namespace

absl::Status ValidateLabelNames(const Labels& labels) {
  for (const auto& [name, value] : labels) {
    if (!prometheus::CheckLabelName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("label name '", name, "' is not [a-zA-Z_][a-zA-Z0-9_]* or starts with __"));
    }
  }
  return absl::OkStatus();
}

absl::Status CallbackFamily::Add(Labels labels, Callback callback) {
  if (!callback) return absl::InvalidArgumentError(absl::StrCat(name_, ": empty callback"));
  if (absl::Status st = ValidateLabelNames(labels); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": ", st.message()));
  }
  absl::MutexLock lock(&mu_);
  if (!callbacks_.try_emplace(std::move(labels), std::move(callback)).second) {
    return absl::AlreadyExistsError(absl::StrCat(name_, ": a callback for this label set exists"));
  }
  return absl::OkStatus();
}

std::vector<prometheus::MetricFamily> CallbackFamily::Collect() const {
  absl::MutexLock lock(&mu_);
  if (callbacks_.empty()) return {};
  prometheus::MetricFamily family = Header(name_, help_, type_);
  family.metric.reserve(callbacks_.size());
  for (const auto& [labels, callback] : callbacks_) family.metric.push_back(Point(labels, callback(), type_));
  std::vector<prometheus::MetricFamily> out;
  out.push_back(std::move(family));
  return out;
}

std::vector<prometheus::MetricFamily> CollectorFamily::Collect() const {
  absl::MutexLock lock(&mu_);
  std::map<Labels, double> children;  // sorted as every family writes them; a repeat is dropped
  for (Sample& s : function_()) {
    if (ValidateLabelNames(s.labels).ok()) children.try_emplace(std::move(s.labels), s.value);
  }
  if (children.empty()) return {};
  prometheus::MetricFamily family = Header(name_, help_, type_);
  family.metric.reserve(children.size());
  for (const auto& [labels, value] : children) family.metric.push_back(Point(labels, value, type_));
  std::vector<prometheus::MetricFamily> out;
  out.push_back(std::move(family));
  return out;
}

}  // namespace tandem::metrics
