// Callback metrics: a family whose children are functions called at scrape
// time. This is how state that already lives elsewhere is exported without
// its owner touching the registry: glue registers a function that reads the
// engine's stats struct (KV blocks in use, running requests), and the engine
// never knows a registry exists (STYLE.md, seams and contracts).
//
// Thread-safety: Add, Remove and AppendTo may be called from any thread.
// Callbacks run on the scraping thread while the family's mutex is held, one
// at a time, so:
//  1. after Remove returns, that callback is not running and never runs again
//     (remove before destroying what it reads);
//  2. a callback must not call into the registry or this family (deadlock);
//  3. a callback should be quick: it delays the scrape, nothing else.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/family.h"
#include "common/metrics/labels.h"

namespace tandem::metrics {

class CallbackFamily final : public FamilyBase {
 public:
  enum class Kind { kCounter, kGauge };
  using Callback = std::function<double()>;

  CallbackFamily(std::string name, std::string help, Kind kind)
      : FamilyBase(std::move(name), std::move(help)), kind_(kind) {}

  // Registers `callback` for `labels`. InvalidArgument for a bad label set
  // or an empty callback; AlreadyExists when `labels` already has one.
  [[nodiscard]] absl::Status Add(Labels labels, Callback callback);

  // Unregisters the callback for `labels` (in any order); false when none.
  bool Remove(Labels labels);

  void AppendTo(std::string* out) const override;

 private:
  const Kind kind_;
  mutable absl::Mutex mu_;
  std::map<Labels, Callback> callbacks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem::metrics
