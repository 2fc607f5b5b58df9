// Scrape-time metrics as prometheus::Collectable adapters: families whose
// values are read when Prometheus scrapes, not pushed by the code that owns
// them. prometheus-cpp only has metrics that code updates (Counter, Gauge,
// Histogram); these fill that gap, so glue can export state that already
// lives elsewhere (the engine's stats struct, the router's worker table)
// without its owner ever touching a registry.
//
//  - CallbackFamily: a fixed set of children, one function each
//    (tandem_kv_blocks_used{worker="decode-0"} = engine->Stats().kv...).
//  - CollectorFamily: one function returns every child at each scrape, for
//    label sets that come and go while the process runs (the router's workers).
//
// Both write a counter or gauge family, children in label order; a family
// without children writes nothing (as prometheus-cpp's own families do).
// Usually created through metrics::Registry (registry.h), which checks the
// name and help and keeps one name space with the prometheus-cpp families;
// they are plain prometheus::Collectables all the same.
//
// Thread-safety: every method may be called from any thread. The functions
// run on the scraping thread under the family's mutex, one at a time, so a
// function must not call into its family or registry (deadlock), should be
// quick (it delays the scrape, nothing else), and must keep working while
// anything may scrape (stop the server before destroying what it reads).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/labels.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"

namespace tandem::metrics {

// A label set: {{"worker", "decode-0"}, {"role", "decode"}} (a std::map, so
// sorted by name and without repeats).
using Labels = prometheus::Labels;

// Only counters and gauges are read at scrape time: a histogram's buckets
// must be observed as they happen.
enum class ScrapeType { kCounter, kGauge };

// Label names: [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved for
// Prometheus itself). InvalidArgument naming the first bad one otherwise.
[[nodiscard]] absl::Status ValidateLabelNames(const Labels& labels);

class CallbackFamily final : public prometheus::Collectable {
 public:
  using Callback = std::function<double()>;

  // `name` and `help` as the Registry checks them (a valid metric name, help
  // not empty); not checked here.
  CallbackFamily(std::string name, std::string help, ScrapeType type)
      : name_(std::move(name)), help_(std::move(help)), type_(type) {}

  // Registers `callback` for `labels`. InvalidArgument for a bad label name
  // or an empty callback; AlreadyExists when `labels` already has one.
  [[nodiscard]] absl::Status Add(Labels labels, Callback callback);

  // One family, each callback called once; nothing when there is no child.
  std::vector<prometheus::MetricFamily> Collect() const override;

  const std::string& name() const { return name_; }

 private:
  const std::string name_;
  const std::string help_;
  const ScrapeType type_;
  mutable absl::Mutex mu_;
  std::map<Labels, Callback> callbacks_ ABSL_GUARDED_BY(mu_);
};

// One child as a CollectorFamily's function reports it.
struct Sample {
  Labels labels;
  double value = 0;
};

class CollectorFamily final : public prometheus::Collectable {
 public:
  using Function = std::function<std::vector<Sample>()>;

  // `name` and `help` as for CallbackFamily; `function` must not be empty.
  CollectorFamily(std::string name, std::string help, ScrapeType type, Function function)
      : name_(std::move(name)), help_(std::move(help)), type_(type), function_(std::move(function)) {}

  // One family from one call of the function. A sample with a bad label
  // name, or a label set already seen in this call, is dropped: one bad
  // worker id must not make the whole exposition unparsable.
  std::vector<prometheus::MetricFamily> Collect() const override;

  const std::string& name() const { return name_; }

 private:
  const std::string name_;
  const std::string help_;
  const ScrapeType type_;
  const Function function_;
  mutable absl::Mutex mu_;  // one call at a time
};

}  // namespace tandem::metrics
