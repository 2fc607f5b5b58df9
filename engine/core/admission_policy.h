// Admission policies: the rungs of the batching ladder, as small strategy
// objects the scheduler consults (a strategy adds a policy, never a branch in
// Schedule()).
//
// A policy answers two questions: how many waiting sequences may join the
// running set now, and whether a joining sequence reserves KV blocks for its
// whole context (prompt + max_tokens) up front instead of growing on demand.
// Thread-safety: immutable after construction.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/core/scheduler_config.h"

namespace tandem {

// What a policy sees when it decides.
struct AdmissionState {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int64_t oldest_wait_ms = 0;  // the longest any waiting sequence has waited
};

class AdmissionPolicy {
 public:
  virtual ~AdmissionPolicy() = default;
  // How many waiting sequences may be admitted this step (before block checks).
  virtual int32_t MaxAdmissions(const AdmissionState& s) const = 0;
  // Whether admitted sequences reserve KV for prompt + max_tokens at once.
  virtual bool reserve_full_context() const = 0;
  // Whether a whole batch joins at once even when this step's token budget is
  // spent (its members then start computing in the following steps).
  virtual bool forms_batches() const = 0;
};

// The policy of `config.batching`. Precondition: config.Validate() is OK.
std::unique_ptr<AdmissionPolicy> MakeAdmissionPolicy(const SchedulerConfig& config);

}  // namespace tandem
