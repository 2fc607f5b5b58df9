// Registry: every metric one process serves, on prometheus-cpp.
//
// Two kinds of family share one name space here:
//  - counters, gauges and histograms the code updates: prometheus-cpp's own
//    Family<Counter|Gauge|Histogram>, held in a prometheus::Registry;
//  - scrape-time families (CallbackFamily, CollectorFamily: collectables.h),
//    which prometheus-cpp has no notion of.
// The Registry is itself a prometheus::Collectable: MetricsServer serves
// its Collect() (any prometheus::Exposer could, with 16-digit values).
//
//   metrics::Registry registry;
//   auto* requests = *registry.AddCounter("tandem_requests_total", "Requests finished.");
//   prometheus::Counter* ok = *metrics::AddChild(requests, {{"status", "ok"}});  // once, at setup
//   ok->Increment();                                                              // hot path
//
// What this adds to prometheus-cpp: absl::Status errors instead of its
// exceptions (Tandem code does not throw), one name space across both kinds
// (a histogram "x" also claims x_bucket, x_sum and x_count), and Collect()
// in a deterministic order: families by name, children by labels.
//
// Families and children live as long as the registry: pointers to them stay
// valid until it is destroyed, so callers look a child up once and keep it.
//
// Thread-safety: every method may be called from any thread. Collect holds
// the registry's mutex while scrape-time functions run, so such a function
// must not call back into the registry.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/collectables.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace tandem::metrics {

class Registry final : public prometheus::Collectable {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Each Add* creates a family. Errors: InvalidArgument for a bad name
  // ([a-zA-Z_:][a-zA-Z0-9_:]*), an empty help text or an empty function;
  // AlreadyExists when the name, or a sample name it writes, is
  // taken. Counter names should end in _total (promtool warns otherwise),
  // but that is not enforced. A histogram's bucket bounds are given per
  // child (prometheus-cpp's way): AddChild(family, labels, Buckets(preset)).
  absl::StatusOr<prometheus::Family<prometheus::Counter>*> AddCounter(const std::string& name,
                                                                     const std::string& help);
  absl::StatusOr<prometheus::Family<prometheus::Gauge>*> AddGauge(const std::string& name, const std::string& help);
  absl::StatusOr<prometheus::Family<prometheus::Histogram>*> AddHistogram(const std::string& name,
                                                                         const std::string& help);
  absl::StatusOr<CallbackFamily*> AddCallbackCounter(const std::string& name, const std::string& help);
  absl::StatusOr<CallbackFamily*> AddCallbackGauge(const std::string& name, const std::string& help);
  // Families whose children `function` reports at every scrape (label sets
  // that come and go); see collectables.h.
  absl::StatusOr<CollectorFamily*> AddCollectorCounter(const std::string& name, const std::string& help,
                                                       CollectorFamily::Function function);
  absl::StatusOr<CollectorFamily*> AddCollectorGauge(const std::string& name, const std::string& help,
                                                     CollectorFamily::Function function);

  // Every family with at least one child: families by name, children by labels.
  std::vector<prometheus::MetricFamily> Collect() const override;

  // Collect() in the text exposition format 0.0.4, values exact (what a
  // scrape gets; text_serializer.h).
  std::string Serialize() const;

 private:
  // Validates `name` and `help` and reserves the sample names the family writes.
  absl::Status Claim(const std::string& name, const std::string& help, bool histogram)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  template <typename T>
  absl::StatusOr<prometheus::Family<T>*> AddFamily(const std::string& name, const std::string& help);
  template <typename F, typename... Args>
  absl::StatusOr<F*> AddScrapeFamily(const std::string& name, const std::string& help, Args&&... args);

  mutable absl::Mutex mu_;
  // Throw: a name is never merged into an existing family (Claim refuses it first anyway).
  prometheus::Registry families_{prometheus::Registry::InsertBehavior::Throw};
  std::vector<std::unique_ptr<prometheus::Collectable>> scrape_families_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> sample_names_ ABSL_GUARDED_BY(mu_);
};

// The child of `family` for `labels` (created on first use; the same one
// for the same labels after), with prometheus-cpp's exceptions as Status:
// InvalidArgument for a bad label name, "le" on a histogram, or bad bucket
// bounds (`args`: a histogram's Buckets(...), which ValidateBucketBounds
// must accept). The child lives as long as its family.
absl::StatusOr<prometheus::Counter*> AddChild(prometheus::Family<prometheus::Counter>* family, const Labels& labels);
absl::StatusOr<prometheus::Gauge*> AddChild(prometheus::Family<prometheus::Gauge>* family, const Labels& labels);
absl::StatusOr<prometheus::Histogram*> AddChild(prometheus::Family<prometheus::Histogram>* family,
                                                const Labels& labels,
                                                const prometheus::Histogram::BucketBoundaries& buckets);

}  // namespace tandem::metrics
