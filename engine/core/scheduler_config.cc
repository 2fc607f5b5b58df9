#include "engine/core/scheduler_config.h"

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status SchedulerConfig::Validate() const {
  if (max_num_batched_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_num_batched_tokens = ", max_num_batched_tokens, ": must be >= 1"));
  }
  if (max_num_seqs < 1) return absl::InvalidArgumentError(absl::StrCat("max_num_seqs = ", max_num_seqs, ": must be >= 1"));
  if (batch_size < 1) return absl::InvalidArgumentError(absl::StrCat("batch_size = ", batch_size, ": must be >= 1"));
  if (max_batch_delay_ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_delay_ms = ", max_batch_delay_ms, ": must be >= 0"));
  }
  if (priority_aging_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat("priority_aging_steps = ", priority_aging_steps, ": must be >= 1"));
  }
  return absl::OkStatus();
}

absl::StatusOr<BatchingStrategy> ParseBatchingStrategy(std::string_view name) {
  for (BatchingStrategy s : {BatchingStrategy::kNone, BatchingStrategy::kStatic, BatchingStrategy::kDynamic,
                             BatchingStrategy::kContinuous, BatchingStrategy::kPaged}) {
    if (BatchingStrategyName(s) == name) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "batching '", absl::string_view(name.data(), name.size()), "': must be one of none, static, dynamic, continuous, paged"));
}

std::string_view BatchingStrategyName(BatchingStrategy s) {
  switch (s) {
    case BatchingStrategy::kNone: return "none";
    case BatchingStrategy::kStatic: return "static";
    case BatchingStrategy::kDynamic: return "dynamic";
    case BatchingStrategy::kContinuous: return "continuous";
    case BatchingStrategy::kPaged: return "paged";
  }
  return "?";
}

}  // namespace tandem
