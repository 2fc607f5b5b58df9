// Registry (see registry.h). Thread-safe.
#include "common/metrics/registry.h"

#include <algorithm>
#include <exception>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/metrics/buckets.h"
#include "prometheus/check_names.h"
#include "common/metrics/text_serializer.h"

namespace tandem::metrics {
namespace {

std::vector<std::string> SampleNames(const std::string& name, bool histogram) {
  if (!histogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

absl::Status CheckChildLabels(const std::string& family, const Labels& labels) {
  if (absl::Status st = ValidateLabelNames(labels); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(family, ": ", st.message()));
  }
  return absl::OkStatus();
}

// Runs `add` (a prometheus-cpp call that reports a bad argument by throwing)
// and returns its result, or the exception as InvalidArgument.
template <typename T, typename Fn>
absl::StatusOr<T*> Catching(const std::string& what, Fn add) {
  try {
    return &add();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace

absl::Status Registry::Claim(const std::string& name, const std::string& help, bool histogram) {
  if (!prometheus::CheckMetricName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("metric name '", name, "' is not [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  if (help.empty()) return absl::InvalidArgumentError(absl::StrCat("metric '", name, "': help text is empty"));
  const std::vector<std::string> names = SampleNames(name, histogram);
  for (const std::string& n : names) {
    if (sample_names_.count(n) > 0) {
      return absl::AlreadyExistsError(absl::StrCat("metric '", name, "': the name '", n, "' is already taken"));
    }
  }
  sample_names_.insert(names.begin(), names.end());
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<prometheus::Family<T>*> Registry::AddFamily(const std::string& name, const std::string& help) {
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Claim(name, help, T::metric_type == prometheus::MetricType::Histogram); !st.ok()) return st;
  // Claim checked everything prometheus-cpp would throw for; kept as a Status anyway.
  return Catching<prometheus::Family<T>>(name, [&]() -> prometheus::Family<T>& {
    if constexpr (std::is_same_v<T, prometheus::Counter>) {
      return prometheus::BuildCounter().Name(name).Help(help).Register(families_);
    } else if constexpr (std::is_same_v<T, prometheus::Gauge>) {
      return prometheus::BuildGauge().Name(name).Help(help).Register(families_);
    } else {
      return prometheus::BuildHistogram().Name(name).Help(help).Register(families_);
    }
  });
}

template <typename F, typename... Args>
absl::StatusOr<F*> Registry::AddScrapeFamily(const std::string& name, const std::string& help, Args&&... args) {
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Claim(name, help, false); !st.ok()) return st;
  auto family = std::make_unique<F>(name, help, std::forward<Args>(args)...);
  F* raw = family.get();
  scrape_families_.push_back(std::move(family));
  return raw;
}

absl::StatusOr<prometheus::Family<prometheus::Counter>*> Registry::AddCounter(const std::string& name,
                                                                             const std::string& help) {
  return AddFamily<prometheus::Counter>(name, help);
}

absl::StatusOr<prometheus::Family<prometheus::Gauge>*> Registry::AddGauge(const std::string& name,
                                                                         const std::string& help) {
  return AddFamily<prometheus::Gauge>(name, help);
}

absl::StatusOr<prometheus::Family<prometheus::Histogram>*> Registry::AddHistogram(const std::string& name,
                                                                                 const std::string& help) {
  return AddFamily<prometheus::Histogram>(name, help);
}

absl::StatusOr<CallbackFamily*> Registry::AddCallbackCounter(const std::string& name, const std::string& help) {
  return AddScrapeFamily<CallbackFamily>(name, help, ScrapeType::kCounter);
}

absl::StatusOr<CallbackFamily*> Registry::AddCallbackGauge(const std::string& name, const std::string& help) {
  return AddScrapeFamily<CallbackFamily>(name, help, ScrapeType::kGauge);
}

absl::StatusOr<CollectorFamily*> Registry::AddCollectorCounter(const std::string& name, const std::string& help,
                                                               CollectorFamily::Function function) {
  if (!function) return absl::InvalidArgumentError(absl::StrCat("metric '", name, "': empty collect function"));
  return AddScrapeFamily<CollectorFamily>(name, help, ScrapeType::kCounter, std::move(function));
}

absl::StatusOr<CollectorFamily*> Registry::AddCollectorGauge(const std::string& name, const std::string& help,
                                                             CollectorFamily::Function function) {
  if (!function) return absl::InvalidArgumentError(absl::StrCat("metric '", name, "': empty collect function"));
  return AddScrapeFamily<CollectorFamily>(name, help, ScrapeType::kGauge, std::move(function));
}

std::vector<prometheus::MetricFamily> Registry::Collect() const {
  std::vector<prometheus::MetricFamily> out = families_.Collect();
  {
    absl::MutexLock lock(&mu_);
    for (const auto& family : scrape_families_) {
      std::vector<prometheus::MetricFamily> collected = family->Collect();
      out.insert(out.end(), std::make_move_iterator(collected.begin()), std::make_move_iterator(collected.end()));
    }
  }
  // prometheus-cpp groups families by type and keeps children in a hash map;
  // sorted, the text is the same for the same state (and easy to diff).
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (prometheus::MetricFamily& family : out) {
    std::sort(family.metric.begin(), family.metric.end(),
              [](const prometheus::ClientMetric& a, const prometheus::ClientMetric& b) { return a.label < b.label; });
  }
  return out;
}

std::string Registry::Serialize() const { return TextSerializer().Serialize(Collect()); }

absl::StatusOr<prometheus::Counter*> AddChild(prometheus::Family<prometheus::Counter>* family, const Labels& labels) {
  if (absl::Status st = CheckChildLabels(family->GetName(), labels); !st.ok()) return st;
  return Catching<prometheus::Counter>(family->GetName(),
                                       [&]() -> prometheus::Counter& { return family->Add(labels); });
}

absl::StatusOr<prometheus::Gauge*> AddChild(prometheus::Family<prometheus::Gauge>* family, const Labels& labels) {
  if (absl::Status st = CheckChildLabels(family->GetName(), labels); !st.ok()) return st;
  return Catching<prometheus::Gauge>(family->GetName(), [&]() -> prometheus::Gauge& { return family->Add(labels); });
}

absl::StatusOr<prometheus::Histogram*> AddChild(prometheus::Family<prometheus::Histogram>* family,
                                                const Labels& labels,
                                                const prometheus::Histogram::BucketBoundaries& buckets) {
  if (absl::Status st = CheckChildLabels(family->GetName(), labels); !st.ok()) return st;
  if (labels.count("le") > 0) {
    return absl::InvalidArgumentError(absl::StrCat(family->GetName(), ": label name 'le' is reserved for buckets"));
  }
  if (absl::Status st = ValidateBucketBounds(buckets); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(family->GetName(), ": ", st.message()));
  }
  return Catching<prometheus::Histogram>(family->GetName(),
                                         [&]() -> prometheus::Histogram& { return family->Add(labels, buckets); });
}

}  // namespace tandem::metrics
