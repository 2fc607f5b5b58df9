// A metric family: one name, help text and type, with one child metric per
// label set (family.Add({{"status","ok"}}) → the Counter for status="ok").
// Children live as long as the family (that is, the Registry), so callers
// look a child up once and keep the pointer for the hot path.
// Thread-safety: Add and AppendTo may be called from any thread; Add takes
// the family's mutex (a setup-time cost), the children themselves are atomic.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/labels.h"
#include "common/metrics/text_format.h"

namespace tandem::metrics {

// What the Registry holds and serializes: any kind of family.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {}
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }

  // Appends HELP, TYPE and every child's samples, children in label order.
  // A family without children appends nothing.
  virtual void AppendTo(std::string* out) const = 0;

 private:
  const std::string name_;
  const std::string help_;
};

// Metric is Counter, Gauge or Histogram (or any type with kType and
// AppendTo(name, labels, out)).
template <typename Metric>
class Family final : public FamilyBase {
 public:
  using Factory = std::function<std::unique_ptr<Metric>()>;

  // `reserved_label` is a label name callers may not use ("le" for histograms).
  Family(std::string name, std::string help, std::string reserved_label, Factory factory)
      : FamilyBase(std::move(name), std::move(help)),
        reserved_label_(std::move(reserved_label)),
        factory_(std::move(factory)) {}

  // The child for `labels`, created on first use; the same pointer for the
  // same set in any order. Owned by the family. InvalidArgument when a label
  // name is invalid, repeated or reserved.
  absl::StatusOr<Metric*> Add(Labels labels) {
    absl::StatusOr<Labels> canonical = CanonicalLabels(std::move(labels), reserved_label_);
    if (!canonical.ok()) return canonical.status();
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Metric>& child = children_[*std::move(canonical)];
    if (child == nullptr) child = factory_();
    return child.get();
  }

  void AppendTo(std::string* out) const override {
    absl::MutexLock lock(&mu_);
    if (children_.empty()) return;
    AppendHeader(name(), help(), Metric::kType, out);
    for (const auto& [labels, child] : children_) child->AppendTo(name(), labels, out);
  }

 private:
  const std::string reserved_label_;
  const Factory factory_;
  mutable absl::Mutex mu_;
  std::map<Labels, std::unique_ptr<Metric>> children_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem::metrics
