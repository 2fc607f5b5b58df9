#include "engine/core/scheduler.h"

#include <algorithm>
#include <tuple>

#include "absl/base/internal/raw_logging.h"

namespace tandem {

Scheduler::Scheduler(const SchedulerConfig& config, KvCacheManager* kv, std::function<int64_t()> now_ms)
    : config_(config), kv_(kv), now_ms_(std::move(now_ms)), policy_(MakeAdmissionPolicy(config)) {}

int64_t Scheduler::BlocksFor(int64_t num_tokens) const {
  return (num_tokens + kv_->block_size() - 1) / kv_->block_size();
}

bool Scheduler::MustWaitForWholeBudget(int64_t remaining) const {
  // Without chunked prefill a computation waits for a step with room for all
  // of it, unless it could never fit one step (a recomputation after
  // preemption can outgrow the budget): then it is chunked after all.
  return !config_.enable_chunked_prefill && remaining <= config_.max_num_batched_tokens;
}

bool Scheduler::FitsPool(int64_t num_tokens) const {
  return BlocksFor(num_tokens) <= kv_->pool().num_blocks();
}

int64_t Scheduler::reserved_blocks() const {
  int64_t outstanding = 0;
  for (const auto& [seq, total] : reserved_total_) {
    outstanding += std::max<int64_t>(0, total - static_cast<int64_t>(kv_->BlockTable(seq->id).size()));
  }
  return outstanding;
}

void Scheduler::AddWaiting(Sequence* seq) {
  seq->status = SequenceStatus::kWaiting;
  waiting_.push_back(seq);
  wait_start_ms_[seq] = now_ms_();
}

void Scheduler::AddRunning(Sequence* seq) {
  seq->status = SequenceStatus::kRunning;
  running_.push_back(seq);
  if (policy_->reserve_full_context()) {
    reserved_total_[seq] = BlocksFor(seq->num_prompt_tokens + seq->params.max_tokens);
  }
}

bool Scheduler::PromiseFullContext(Sequence* seq) {
  if (!policy_->reserve_full_context()) return true;
  const int64_t total = BlocksFor(seq->num_prompt_tokens + seq->params.max_tokens);
  if (kv_->NumFreeBlocks() - reserved_blocks() < total) return false;
  reserved_total_[seq] = total;
  return true;
}

void Scheduler::EraseFrom(std::vector<Sequence*>& v, Sequence* seq) {
  v.erase(std::remove(v.begin(), v.end(), seq), v.end());
}

void Scheduler::Remove(Sequence* seq) {
  EraseFrom(running_, seq);
  EraseFrom(waiting_, seq);
  wait_start_ms_.erase(seq);
  reserved_total_.erase(seq);
}

Sequence* Scheduler::PeekNext() const {
  if (waiting_.empty()) return nullptr;
  if (config_.queue_policy == QueuePolicy::kFcfs) {
    return *std::min_element(waiting_.begin(), waiting_.end(),
                             [](Sequence* a, Sequence* b) { return a->arrival_order < b->arrival_order; });
  }
  // Priority with aging: every priority_aging_steps waiting steps count as
  // one level better, so low-priority requests cannot wait forever.
  auto key = [this](Sequence* s) {
    return std::make_tuple(s->priority - s->waiting_steps / config_.priority_aging_steps, s->arrival_order);
  };
  return *std::min_element(waiting_.begin(), waiting_.end(),
                           [&](Sequence* a, Sequence* b) { return key(a) < key(b); });
}

Sequence* Scheduler::PickVictim() const {
  if (config_.queue_policy == QueuePolicy::kFcfs) {
    return *std::max_element(running_.begin(), running_.end(),
                             [](Sequence* a, Sequence* b) { return a->arrival_order < b->arrival_order; });
  }
  return *std::max_element(running_.begin(), running_.end(), [](Sequence* a, Sequence* b) {
    return std::tie(a->priority, a->arrival_order) < std::tie(b->priority, b->arrival_order);
  });
}

void Scheduler::Preempt(Sequence* victim, SchedulerOutput& out, int64_t& budget) {
  // A victim already planned for this step gives its budget back.
  auto it = std::find_if(out.scheduled.begin(), out.scheduled.end(),
                         [victim](const ScheduledSequence& s) { return s.seq == victim; });
  if (it != out.scheduled.end()) {
    budget += it->num_new_tokens;
    out.num_batched_tokens -= it->num_new_tokens;
    out.scheduled.erase(it);
  }
  EraseFrom(running_, victim);
  reserved_total_.erase(victim);
  (void)kv_->Free(victim->id);  // registered while running (invariant 2)
  victim->num_computed_tokens = 0;
  victim->waiting_steps = 0;  // aging restarts: a victim must not jump straight back in
  ++victim->num_preemptions;
  ++num_preemptions_;
  out.preempted.push_back(victim);
  AddWaiting(victim);
}

void Scheduler::ScheduleRunning(SchedulerOutput& out, int64_t& budget) {
  // Iterate over a snapshot: preemption removes entries from running_.
  const std::vector<Sequence*> snapshot = running_;
  for (Sequence* seq : snapshot) {
    if (budget == 0) break;
    if (seq->status != SequenceStatus::kRunning) continue;  // preempted earlier in this loop
    const int64_t remaining = seq->num_tokens() - seq->num_computed_tokens;
    int64_t n = std::min(remaining, budget);
    if (n < remaining && MustWaitForWholeBudget(remaining)) continue;
    if (n <= 0) continue;
    while (true) {
      const absl::Status st = kv_->Allocate(seq->id, seq->tokens, n);
      ABSL_RAW_CHECK(st.ok() || absl::IsResourceExhausted(st),
                     "scheduler asked the block manager for an invalid allocation");
      if (st.ok()) {
        out.scheduled.push_back({seq, n});
        out.num_batched_tokens += n;
        budget -= n;
        break;
      }
      Sequence* victim = PickVictim();
      Preempt(victim, out, budget);
      if (victim == seq) break;
    }
  }
}

void Scheduler::AdmitWaiting(SchedulerOutput& out, int64_t& budget) {
  const int64_t now = now_ms_();
  int64_t oldest = 0;
  for (Sequence* s : waiting_) oldest = std::max(oldest, now - wait_start_ms_[s]);
  const int32_t max_admissions = policy_->MaxAdmissions(
      {num_running(), num_waiting(), oldest});
  for (int32_t admitted = 0; admitted < max_admissions; ++admitted) {
    Sequence* seq = PeekNext();
    if (seq == nullptr || num_running() >= config_.max_num_seqs) break;
    if (budget == 0 && !policy_->forms_batches()) break;
    if (policy_->reserve_full_context()) {
      const int64_t total = BlocksFor(seq->num_prompt_tokens + seq->params.max_tokens);
      if (kv_->NumFreeBlocks() - reserved_blocks() < total) break;
    }
    const CachedPrefix prefix = kv_->FindCachedPrefix(seq->tokens);
    const int64_t remaining = seq->num_tokens() - prefix.num_cached_tokens;
    int64_t n = std::min(remaining, budget);
    if (n < remaining && MustWaitForWholeBudget(remaining)) {
      if (!policy_->forms_batches()) break;
      n = 0;
    }
    const absl::Status st = kv_->Allocate(seq->id, seq->tokens, n, prefix);
    // Out of blocks, or the prefix was evicted meanwhile: wait for the next step.
    if (absl::IsResourceExhausted(st) || absl::IsFailedPrecondition(st)) break;
    ABSL_RAW_CHECK(st.ok(), "scheduler asked the block manager for an invalid allocation");
    EraseFrom(waiting_, seq);
    wait_start_ms_.erase(seq);
    seq->num_computed_tokens = prefix.num_cached_tokens;
    AddRunning(seq);
    if (n > 0) {
      out.scheduled.push_back({seq, n});
      out.num_batched_tokens += n;
      budget -= n;
    }
  }
}

SchedulerOutput Scheduler::Schedule() {
  SchedulerOutput out;
  int64_t budget = config_.max_num_batched_tokens;
  ScheduleRunning(out, budget);
  if (out.preempted.empty()) AdmitWaiting(out, budget);
  for (Sequence* s : waiting_) ++s->waiting_steps;
  return out;
}

}  // namespace tandem
