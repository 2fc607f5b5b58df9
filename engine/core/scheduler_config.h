// Typed configuration of the scheduler: token budget, running cap, queue
// policy, and which rung of the batching ladder to run.
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem {

// The seed's batching ladder, measurable side by side on one engine.
enum class BatchingStrategy {
  kNone,        // one request at a time, run to completion
  kStatic,      // a fixed batch of up to batch_size, run until every member finishes
  kDynamic,     // like static, but wait for batch_size requests or max_batch_delay_ms
  kContinuous,  // iteration-level; each sequence reserves KV for its whole context up front
  kPaged,       // iteration-level with on-demand blocks and preemption (default)
};

// Which waiting request goes first.
enum class QueuePolicy {
  kFcfs,      // arrival order
  kPriority,  // lower `priority` first, ties by arrival; waiting ages so nothing starves
};

struct SchedulerConfig {
  int64_t max_num_batched_tokens = 2048;  // token budget of one step
  int32_t max_num_seqs = 64;              // cap on running sequences
  bool enable_chunked_prefill = true;     // split prompts longer than the remaining budget
  QueuePolicy queue_policy = QueuePolicy::kFcfs;
  BatchingStrategy batching = BatchingStrategy::kPaged;
  int32_t batch_size = 8;                 // static / dynamic batch size
  int64_t max_batch_delay_ms = 10;        // dynamic: longest wait for a full batch
  int64_t priority_aging_steps = 64;      // priority: one level gained per this many waiting steps

  // InvalidArgument naming the field.
  [[nodiscard]] absl::Status Validate() const;
};

absl::StatusOr<BatchingStrategy> ParseBatchingStrategy(std::string_view name);
std::string_view BatchingStrategyName(BatchingStrategy s);

}  // namespace tandem
