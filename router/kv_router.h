// KvRouter: the router's choice of a worker for a prompt (RoutingPolicy)
// over what each worker holds in its KV cache (a PrefixIndex per role), and
// the books of that choice: prompt blocks routed, and how many of them the
// chosen worker was known to hold already (the predicted prefix hits, in
// every mode, so modes can be compared on one workload).
//
// The index learns from the routing itself (a prompt sent to a worker will
// be in its prefix cache: prefill workers keep what they computed, decode
// workers what they received) and from the workers' KV events (stored /
// evicted, by the same chained block hashes); a restarted worker's entries
// are dropped. A wrong entry costs a cache miss on the worker chosen, never
// correctness: each worker's own prefix cache checks tokens.
// Thread-safety: every method is thread-safe. A Chooser runs under the
// WorkerPool's lock and takes the index's lock inside it (never the other
// way round).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "router/prefix_index.h"
#include "router/routing_policy.h"
#include "router/worker_pool.h"

namespace tandem {

struct KvRoutingOptions {
  RoutingMode mode = RoutingMode::kKvAware;
  // kv-aware's cost = weight x blocks the worker must compute + blocks in
  // flight there (router/routing_policy.h).
  double overlap_weight = 1.0;
  // Blocks remembered per worker (least recently stored dropped first).
  int64_t index_blocks_per_worker = 131072;
};

class KvRouter {
 public:
  explicit KvRouter(KvRoutingOptions options = {});

  // One prompt's tokens and their chained block hashes at a worker's block
  // size (computed once per size; workers normally share one).
  // Thread-compatible: used by one Acquire at a time.
  class Prompt {
   public:
    explicit Prompt(std::vector<int32_t> tokens) : tokens_(std::move(tokens)) {}
    const std::vector<uint64_t>& Hashes(int32_t block_size);
    // Blocks the prompt occupies, a partial last one included.
    int64_t NumBlocks(int32_t block_size) const;

   private:
    std::vector<int32_t> tokens_;
    std::vector<std::pair<int32_t, std::vector<uint64_t>>> hashes_;  // by block size
  };

  // A chooser for WorkerPool::Acquire of a `role` worker for `prompt`
  // (which must outlive the Acquire). It records the choice: the prompt's
  // full blocks go into the chosen worker's index entry, and the books. The
  // load it adds is the blocks the worker must compute (prefill) or hold
  // (decode).
  WorkerPool::Chooser ChooserFor(v1::WorkerRole role, Prompt* prompt);

  // A worker's KV events (RegisterRequest.kv_events) from its process
  // `incarnation`: applied when they follow the last one applied from that
  // process (a snapshot replaces what was known; a repeat is skipped; after
  // a gap nothing is applied). Returns the last change applied, which the
  // worker sends on from (0: send a snapshot).
  uint64_t ApplyEvents(v1::WorkerRole role, const std::string& worker, const std::string& incarnation,
                       const v1::KvEventBatch& batch);

  // KV events one at a time: `worker` holds / dropped these blocks.
  void Stored(v1::WorkerRole role, const std::string& worker, std::span<const uint64_t> hashes);
  void Evicted(v1::WorkerRole role, const std::string& worker, std::span<const uint64_t> hashes);
  // `worker`'s process restarted (or left): forget what it held.
  void WorkerGone(v1::WorkerRole role, const std::string& worker);

  RoutingMode mode() const { return prefill_policy_.mode(); }
  // How much the router knows `worker` holds (in blocks).
  int64_t IndexedBlocks(v1::WorkerRole role, const std::string& worker) const;
  // Prompt blocks routed to workers of `role`, and of those the ones the
  // chosen worker held by the index (cumulative counters).
  int64_t prompt_blocks(v1::WorkerRole role) const { return Books(role).prompt_blocks.load(); }
  int64_t cached_blocks(v1::WorkerRole role) const { return Books(role).cached_blocks.load(); }

 private:
  struct RoleBooks {
    std::atomic<int64_t> prompt_blocks{0};
    std::atomic<int64_t> cached_blocks{0};
  };
  PrefixIndex& Index(v1::WorkerRole role) { return role == v1::WORKER_ROLE_PREFILL ? prefill_index_ : decode_index_; }
  const PrefixIndex& Index(v1::WorkerRole role) const {
    return role == v1::WORKER_ROLE_PREFILL ? prefill_index_ : decode_index_;
  }
  RoleBooks& Books(v1::WorkerRole role) { return role == v1::WORKER_ROLE_PREFILL ? prefill_books_ : decode_books_; }
  const RoleBooks& Books(v1::WorkerRole role) const {
    return role == v1::WORKER_ROLE_PREFILL ? prefill_books_ : decode_books_;
  }

  struct EventState {
    std::string incarnation;
    uint64_t applied = 0;
  };
  std::mutex events_mu_;
  absl::flat_hash_map<std::string, EventState> events_;  // by role and worker id; guarded by events_mu_
  static std::string EventKey(v1::WorkerRole role, const std::string& worker) {
    return (role == v1::WORKER_ROLE_PREFILL ? "p/" : "d/") + worker;
  }

  // One per role: round-robin's turn must go round each role's workers
  // (one shared turn, taken by a request's Admit and then its Prefill,
  // would give each role every other worker only).
  RoutingPolicy& Policy(v1::WorkerRole role) { return role == v1::WORKER_ROLE_PREFILL ? prefill_policy_ : decode_policy_; }

  RoutingPolicy prefill_policy_;
  RoutingPolicy decode_policy_;
  PrefixIndex prefill_index_;
  PrefixIndex decode_index_;
  RoleBooks prefill_books_;
  RoleBooks decode_books_;
};

}  // namespace tandem
