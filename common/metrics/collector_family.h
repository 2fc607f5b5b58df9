// Collector metrics: a family whose whole set of children comes from one
// function called at scrape time. For state whose label sets change while
// the process runs (the router's workers register and go away), where a
// CallbackFamily's fixed children would have to be added and removed by
// hand on every change.
//
// Thread-safety: AppendTo may be called from any thread. The function runs
// on the scraping thread under the family's mutex, so it must not call into
// the registry (deadlock) and should be quick; it must stay valid as long as
// the registry may be serialized.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/family.h"
#include "common/metrics/labels.h"

namespace tandem::metrics {

// One child as the function reports it.
struct Sample {
  Labels labels;
  double value = 0;
};

class CollectorFamily final : public FamilyBase {
 public:
  enum class Kind { kCounter, kGauge };
  using Collect = std::function<std::vector<Sample>()>;

  CollectorFamily(std::string name, std::string help, Kind kind, Collect collect)
      : FamilyBase(std::move(name), std::move(help)), kind_(kind), collect_(std::move(collect)) {}

  // Writes the samples in label order. A sample with an invalid label set,
  // or a label set already seen in this scrape, is dropped: one bad worker
  // id must not make the whole exposition unparsable.
  void AppendTo(std::string* out) const override;

 private:
  const Kind kind_;
  const Collect collect_;
  mutable absl::Mutex mu_;  // one collection at a time
};

}  // namespace tandem::metrics
