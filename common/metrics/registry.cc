// Registry (see registry.h). Thread-safe.
#include "common/metrics/registry.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace tandem::metrics {
namespace {

std::vector<std::string> SampleNames(const std::string& name, bool histogram) {
  if (!histogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

}  // namespace

absl::Status Registry::Claim(const std::string& name, const std::string& help, bool histogram) {
  if (absl::Status st = ValidateMetricName(name); !st.ok()) return st;
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

template <typename F>
F* Registry::Insert(std::unique_ptr<F> family) {
  F* raw = family.get();
  families_.emplace(raw->name(), std::move(family));
  return raw;
}

absl::StatusOr<Family<Counter>*> Registry::AddCounter(std::string name, std::string help) {
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Claim(name, help, false); !st.ok()) return st;
  return Insert(std::make_unique<Family<Counter>>(std::move(name), std::move(help), "",
                                                  [] { return std::make_unique<Counter>(); }));
}

absl::StatusOr<Family<Gauge>*> Registry::AddGauge(std::string name, std::string help) {
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Claim(name, help, false); !st.ok()) return st;
  return Insert(std::make_unique<Family<Gauge>>(std::move(name), std::move(help), "",
                                                [] { return std::make_unique<Gauge>(); }));
}

absl::StatusOr<Family<Histogram>*> Registry::AddHistogram(std::string name, std::string help,
                                                          std::span<const double> bucket_bounds) {
  if (absl::Status st = ValidateBucketBounds(bucket_bounds); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("metric '", name, "': ", st.message()));
  }
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Claim(name, help, true); !st.ok()) return st;
  std::vector<double> bounds(bucket_bounds.begin(), bucket_bounds.end());
  return Insert(std::make_unique<Family<Histogram>>(std::move(name), std::move(help), "le",
                                                    [bounds] { return std::make_unique<Histogram>(bounds); }));
}

absl::StatusOr<CallbackFamily*> Registry::AddCallbackCounter(std::string name, std::string help) {
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Claim(name, help, false); !st.ok()) return st;
  return Insert(std::make_unique<CallbackFamily>(std::move(name), std::move(help), CallbackFamily::Kind::kCounter));
}

absl::StatusOr<CallbackFamily*> Registry::AddCallbackGauge(std::string name, std::string help) {
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Claim(name, help, false); !st.ok()) return st;
  return Insert(std::make_unique<CallbackFamily>(std::move(name), std::move(help), CallbackFamily::Kind::kGauge));
}

absl::StatusOr<CollectorFamily*> Registry::AddCollector(std::string name, std::string help,
                                                        CollectorFamily::Kind kind, CollectorFamily::Collect collect) {
  if (!collect) return absl::InvalidArgumentError(absl::StrCat("metric '", name, "': empty collect function"));
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Claim(name, help, false); !st.ok()) return st;
  return Insert(std::make_unique<CollectorFamily>(std::move(name), std::move(help), kind, std::move(collect)));
}

absl::StatusOr<CollectorFamily*> Registry::AddCollectorCounter(std::string name, std::string help,
                                                               CollectorFamily::Collect collect) {
  return AddCollector(std::move(name), std::move(help), CollectorFamily::Kind::kCounter, std::move(collect));
}

absl::StatusOr<CollectorFamily*> Registry::AddCollectorGauge(std::string name, std::string help,
                                                             CollectorFamily::Collect collect) {
  return AddCollector(std::move(name), std::move(help), CollectorFamily::Kind::kGauge, std::move(collect));
}

std::string Registry::Serialize() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) family->AppendTo(&out);
  return out;
}

}  // namespace tandem::metrics
