// Registry: the set of metric families one process exposes, and their
// serialization to the Prometheus text exposition format 0.0.4.
//
//   metrics::Registry registry;
//   auto* requests = *registry.AddCounter("tandem_requests_total", "Requests finished.");
//   metrics::Counter* ok = *requests->Add({{"status", "ok"}});   // once, at setup
//   ok->Increment();                                               // hot path: one atomic add
//
// Families are written in name order, children in label order, so the text
// is deterministic. Families and children are owned by the registry and live
// as long as it does: pointers to them stay valid until it is destroyed.
//
// Thread-safety: every method may be called from any thread. Serialize holds
// the registry's mutex while families append (and callbacks run), so a
// callback must not call back into the registry.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/callback_family.h"
#include "common/metrics/collector_family.h"
#include "common/metrics/counter.h"
#include "common/metrics/family.h"
#include "common/metrics/histogram.h"

namespace tandem::metrics {

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Each Add* creates a family. Errors: InvalidArgument for a bad name, an
  // empty help text or bad bucket bounds; AlreadyExists when the name, or a
  // sample name it writes (a histogram "x" writes x_bucket, x_sum, x_count),
  // is already taken. Counter names should end in _total (Prometheus's
  // convention; promtool warns otherwise), but that is not enforced.
  absl::StatusOr<Family<Counter>*> AddCounter(std::string name, std::string help);
  absl::StatusOr<Family<Gauge>*> AddGauge(std::string name, std::string help);
  absl::StatusOr<Family<Histogram>*> AddHistogram(std::string name, std::string help,
                                                  std::span<const double> bucket_bounds);
  absl::StatusOr<CallbackFamily*> AddCallbackCounter(std::string name, std::string help);
  absl::StatusOr<CallbackFamily*> AddCallbackGauge(std::string name, std::string help);
  // A family whose children `collect` reports at every scrape (label sets
  // that come and go); see collector_family.h. InvalidArgument for an empty
  // function as well.
  absl::StatusOr<CollectorFamily*> AddCollectorCounter(std::string name, std::string help,
                                                       CollectorFamily::Collect collect);
  absl::StatusOr<CollectorFamily*> AddCollectorGauge(std::string name, std::string help,
                                                     CollectorFamily::Collect collect);

  // Every family with at least one child, as text format 0.0.4.
  std::string Serialize() const;

 private:
  // Validates `name` and `help` and reserves the sample names the family writes.
  absl::Status Claim(const std::string& name, const std::string& help, bool histogram)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<CollectorFamily*> AddCollector(std::string name, std::string help, CollectorFamily::Kind kind,
                                                CollectorFamily::Collect collect);
  template <typename F>
  F* Insert(std::unique_ptr<F> family) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> sample_names_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem::metrics
