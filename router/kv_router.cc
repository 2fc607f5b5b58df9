#include "router/kv_router.h"

#include "engine/core/block_hash.h"

namespace tandem {

KvRouter::KvRouter(KvRoutingOptions options)
    : prefill_policy_(options.mode, options.overlap_weight),
      decode_policy_(options.mode, options.overlap_weight),
      prefill_index_(options.index_blocks_per_worker),
      decode_index_(options.index_blocks_per_worker) {}

const std::vector<uint64_t>& KvRouter::Prompt::Hashes(int32_t block_size) {
  for (const auto& [size, hashes] : hashes_) {
    if (size == block_size) return hashes;
  }
  // The workers' cache salt is 0 (the API has no per-request salt yet).
  hashes_.emplace_back(block_size, ChainedBlockHashes(tokens_, block_size, /*cache_salt=*/0,
                                                      static_cast<int64_t>(tokens_.size())));
  return hashes_.back().second;
}

int64_t KvRouter::Prompt::NumBlocks(int32_t block_size) const {
  return (static_cast<int64_t>(tokens_.size()) + block_size - 1) / block_size;
}

WorkerPool::Chooser KvRouter::ChooserFor(v1::WorkerRole role, Prompt* prompt) {
  return [this, role, prompt](const std::vector<WorkerPool::Candidate>& offered) {
    std::vector<RoutingCandidate> candidates;
    std::vector<int64_t> prompt_blocks;  // per candidate: its block size may differ
    candidates.reserve(offered.size());
    for (const WorkerPool::Candidate& c : offered) {
      const int32_t block_size = c.handle->kv_block_size;
      candidates.push_back({c.in_flight, c.in_flight_blocks, Index(role).Overlap(c.handle->id, prompt->Hashes(block_size))});
      prompt_blocks.push_back(prompt->NumBlocks(block_size));
    }
    // Costs compare blocks: with one block size (the normal case) the first
    // candidate's count is every candidate's.
    const int chosen = Policy(role).Choose(candidates, prompt_blocks.front());
    const WorkerHandle& w = *offered[chosen].handle;
    const std::vector<uint64_t>& hashes = prompt->Hashes(w.kv_block_size);
    Index(role).Stored(w.id, hashes);
    const int64_t blocks = prompt_blocks[chosen], cached = candidates[chosen].cached_blocks;
    Books(role).prompt_blocks += blocks;
    Books(role).cached_blocks += cached;
    return WorkerPool::Choice{chosen, role == v1::WORKER_ROLE_PREFILL ? blocks - cached : blocks};
  };
}

void KvRouter::Stored(v1::WorkerRole role, const std::string& worker, std::span<const uint64_t> hashes) {
  Index(role).Stored(worker, hashes);
}

void KvRouter::Evicted(v1::WorkerRole role, const std::string& worker, std::span<const uint64_t> hashes) {
  Index(role).Evicted(worker, hashes);
}

void KvRouter::WorkerGone(v1::WorkerRole role, const std::string& worker) {
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    events_.erase(EventKey(role, worker));
  }
  Index(role).DropWorker(worker);
}

uint64_t KvRouter::ApplyEvents(v1::WorkerRole role, const std::string& worker, const std::string& incarnation,
                               const v1::KvEventBatch& batch) {
  // One worker's batches arrive one at a time (its registration thread
  // waits for each answer), so holding the lock while applying costs little.
  std::lock_guard<std::mutex> lock(events_mu_);
  EventState& state = events_[EventKey(role, worker)];
  if (state.incarnation != incarnation) {
    // Another process under this id: what the old one held is gone.
    state = {incarnation, 0};
    Index(role).DropWorker(worker);
  }
  if (batch.snapshot()) {
    Index(role).DropWorker(worker);
    for (const v1::KvEventRun& run : batch.runs()) {
      if (!run.evicted()) Index(role).Stored(worker, std::span(run.block_hashes().data(), run.block_hashes().size()));
    }
    state.applied = batch.first_seq();
    return state.applied;
  }
  if (state.applied == 0 || batch.first_seq() == 0 || batch.first_seq() > state.applied + 1) {
    return state.applied;  // nothing known to build on, or a gap: the worker sends a snapshot / resends
  }
  uint64_t seq = batch.first_seq();
  for (const v1::KvEventRun& run : batch.runs()) {
    for (uint64_t h : run.block_hashes()) {
      if (seq > state.applied) {  // earlier ones were applied already (a repeated batch)
        const uint64_t one[1] = {h};
        if (run.evicted()) {
          Index(role).Evicted(worker, one);
        } else {
          Index(role).Stored(worker, one);
        }
        state.applied = seq;
      }
      ++seq;
    }
  }
  return state.applied;
}

int64_t KvRouter::IndexedBlocks(v1::WorkerRole role, const std::string& worker) const {
  return Index(role).NumBlocks(worker);
}

}  // namespace tandem
