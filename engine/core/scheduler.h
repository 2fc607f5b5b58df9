// Scheduler: picks, every step, which sequences run and how many of their
// tokens, under a token budget (iteration-level / in-flight batching).
//
// There is no prefill phase or decode phase: each running sequence has
// `num_tokens() - num_computed_tokens` tokens to compute (a whole prompt, the
// rest of a chunked prompt, a recomputation after preemption, or one decode
// token), and the scheduler hands out the budget running-first, then admits
// waiting sequences while blocks and budget last. A prompt longer than the
// remaining budget is split across steps (chunked prefill), sharing steps
// with decode tokens.
//
// When a running sequence cannot get a block, the newest running sequence
// (under the priority policy: the lowest-priority, then newest) is preempted:
// its blocks are freed and it waits to be recomputed later. No new sequence is
// admitted in a step that preempted. The admission policy (admission_policy.h)
// turns the same loop into each rung of the batching ladder.
//
// Invariants:
//  1. A sequence is in at most one of running_ / waiting_.
//  2. Every running sequence is registered with the KvCacheManager; no waiting
//     one is.
//  3. Under FCFS the head of the queue is never overtaken (no starvation);
//     under priority, waiting sequences age one level per
//     priority_aging_steps steps, so every sequence eventually heads the queue.
// Thread-safety: owned by the engine loop; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/core/admission_policy.h"
#include "engine/core/kv_cache_manager.h"
#include "engine/core/scheduler_config.h"
#include "engine/core/sequence.h"

namespace tandem {

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int64_t num_new_tokens = 0;  // tokens computed for it this step
};

// One step's plan (plain struct; printable for tests).
struct SchedulerOutput {
  std::vector<ScheduledSequence> scheduled;  // batch order
  std::vector<Sequence*> preempted;          // blocks already freed; back in the queue
  int64_t num_batched_tokens = 0;
};

class Scheduler {
 public:
  // `kv` must outlive the scheduler. `now_ms` is the clock (injected so tests
  // control time). Precondition: config.Validate() is OK.
  Scheduler(const SchedulerConfig& config, KvCacheManager* kv, std::function<int64_t()> now_ms);

  // Queues `seq` (status becomes kWaiting). The caller owns `seq` and keeps it
  // alive until Remove().
  void AddWaiting(Sequence* seq);
  // Adds an already-registered sequence straight to the running set (a
  // sequence whose KV was written from outside).
  void AddRunning(Sequence* seq);
  // Forgets `seq` wherever it is queued (and any blocks promised to it).
  // Does not free blocks.
  void Remove(Sequence* seq);
  // For policies that reserve whole contexts: promises `seq` the blocks of
  // its whole context if the unpromised free blocks hold them, else false.
  // Always true under on-demand policies. Used for sequences registered
  // outside Schedule() (KV filled from outside).
  bool PromiseFullContext(Sequence* seq);

  SchedulerOutput Schedule();

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  // Blocks that a full-context sequence may still claim (reserving policies).
  int64_t reserved_blocks() const;
  const SchedulerConfig& config() const { return config_; }

  // Whether a sequence of `num_tokens` context could ever fit the pool.
  bool FitsPool(int64_t num_tokens) const;

 private:
  int64_t BlocksFor(int64_t num_tokens) const;
  bool MustWaitForWholeBudget(int64_t remaining) const;
  void ScheduleRunning(SchedulerOutput& out, int64_t& budget);
  void AdmitWaiting(SchedulerOutput& out, int64_t& budget);
  // The waiting sequence to admit next (nullptr when none).
  Sequence* PeekNext() const;
  // The running sequence to give up first.
  Sequence* PickVictim() const;
  void Preempt(Sequence* victim, SchedulerOutput& out, int64_t& budget);
  void EraseFrom(std::vector<Sequence*>& v, Sequence* seq);

  const SchedulerConfig config_;
  KvCacheManager* const kv_;
  const std::function<int64_t()> now_ms_;
  const std::unique_ptr<AdmissionPolicy> policy_;
  std::vector<Sequence*> running_;  // admission order
  std::vector<Sequence*> waiting_;
  absl::flat_hash_map<Sequence*, int64_t> wait_start_ms_;
  absl::flat_hash_map<Sequence*, int64_t> reserved_total_;  // full-context blocks per sequence
  int64_t num_preemptions_ = 0;
};

}  // namespace tandem
