// Callback metrics (see callback_family.h). Thread-safe.
#include "common/metrics/callback_family.h"

#include "absl/strings/str_cat.h"
#include "common/metrics/text_format.h"

namespace tandem::metrics {

absl::Status CallbackFamily::Add(Labels labels, Callback callback) {
  if (!callback) return absl::InvalidArgumentError(absl::StrCat(name(), ": empty callback"));
  absl::StatusOr<Labels> canonical = CanonicalLabels(std::move(labels));
  if (!canonical.ok()) return canonical.status();
  absl::MutexLock lock(&mu_);
  if (!callbacks_.try_emplace(*std::move(canonical), std::move(callback)).second) {
    return absl::AlreadyExistsError(absl::StrCat(name(), ": a callback for this label set exists"));
  }
  return absl::OkStatus();
}

bool CallbackFamily::Remove(Labels labels) {
  absl::StatusOr<Labels> canonical = CanonicalLabels(std::move(labels));
  if (!canonical.ok()) return false;
  absl::MutexLock lock(&mu_);
  return callbacks_.erase(*canonical) > 0;
}

void CallbackFamily::AppendTo(std::string* out) const {
  absl::MutexLock lock(&mu_);
  if (callbacks_.empty()) return;
  AppendHeader(name(), help(), kind_ == Kind::kCounter ? "counter" : "gauge", out);
  for (const auto& [labels, callback] : callbacks_) AppendSample(name(), labels, callback(), out);
}

}  // namespace tandem::metrics
