// KvCacheManager: the per-sequence view of the paged KV pool that the
// scheduler uses. It keeps each sequence's block table, takes blocks from a
// BlockPool, and runs automatic prefix caching: full blocks are hashed in a
// chain (block_hash.h) once their KV is computed, and a new prompt starts from
// the longest run of cached blocks that match its beginning.
//
// The step protocol (one engine-loop iteration):
//   1. New sequence: prefix = FindCachedPrefix(prompt); then
//      Allocate(seq, tokens, num_new_tokens, prefix) at admission. Later steps:
//      Allocate(seq, tokens, num_new_tokens) before each step that runs it.
//      kResourceExhausted leaves no trace: the scheduler preempts or waits.
//   2. The model computes KV for the scheduled tokens into BlockTable(seq).
//   3. CommitComputed(seq, tokens, num_computed_tokens): newly full blocks enter
//      the prefix cache.
//   4. Free(seq) when it finishes, is cancelled or preempted.
// Why parent identity, not parent hash: a lookup hit must mean the whole
// prefix is equal. Each cached block records the CachedBlockRef (block id +
// caching epoch) of its parent's cached copy, and a chain only continues
// through the exact block matched one step before, so no hash collision, even
// a crafted one, can splice another prefix's KV into a chain. Cost: when two
// sequences computed the same prefix at once, the later one's blocks are
// uncached duplicates; if the first copy is then evicted while the later
// sequence runs, that sequence's next blocks are not cached (a miss, not a
// bug; vLLM instead keeps several blocks per hash).
// Why "never the whole prompt": the step that samples a token needs the logits
// of the prompt's last position, so at least one prompt token is recomputed
// even when every block is cached (vLLM drops the last block the same way).
//
// Invariants (CheckInvariants() verifies each):
//  1. The pool's invariants hold (block_pool.h).
//  2. The ref count of every block equals the number of block tables holding
//     it; so a block is in the free queue iff no table holds it, and
//     used + free == num_blocks.
//  3. No table holds a block twice.
//  4. For every sequence, num_computed_tokens <= table size * block_size.
//  5. With prefix caching on, a sequence has a chained hash for each of its
//     first num_computed_tokens / block_size blocks, and each of those blocks
//     is either uncached (a duplicate of a block cached first, or a child of
//     one whose parent can no longer be hit) or cached under exactly that hash.
//     With prefix caching off, nothing is hashed or cached.
//
// Thread-safety: none. The engine loop thread owns it (STYLE.md 3).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/ids.h"
#include "engine/core/block_hash.h"
#include "engine/core/block_pool.h"

namespace tandem {

// Signature of HashBlockTokens; injectable so tests can force collisions.
using BlockHashFn = uint64_t (*)(uint64_t parent_hash, std::span<const int32_t> token_ids,
                                 uint64_t cache_salt);

struct KvCacheManagerOptions {
  int32_t num_blocks = 0;                  // blocks in the pool (KvCacheShape::num_blocks)
  int32_t block_size = 16;                 // tokens per block
  bool enable_prefix_caching = true;       // hash full blocks and reuse them across sequences
  BlockHashFn hash_fn = &HashBlockTokens;  // tests only; production keeps the default
  // Records the prefix cache's changes for routers (may be null); must
  // outlive the manager.
  KvEventLog* event_log = nullptr;

  // kInvalidArgument unless num_blocks >= 0, block_size > 0, hash_fn set.
  [[nodiscard]] absl::Status Validate() const;
};

// A run of cached blocks at the start of a prompt, from FindCachedPrefix().
// Only valid until the pool next changes (another Allocate may evict them);
// Allocate() re-verifies it and answers kFailedPrecondition when stale.
struct CachedPrefix {
  std::vector<BlockId> blocks;    // the cached blocks, in order
  int64_t num_cached_tokens = 0;  // blocks.size() * block_size
  uint64_t cache_salt = 0;        // the salt the prefix was looked up with
};

// A snapshot for metrics (the glue exports it; STYLE.md 8).
struct KvCacheStats {
  int32_t num_blocks = 0;
  int32_t num_used_blocks = 0;    // ref_count > 0
  int32_t num_free_blocks = 0;    // in the free queue, evictable cached ones included
  int32_t num_cached_blocks = 0;  // holding a prefix-cache entry, used or free
  // Prefix-cache counters since construction (vLLM's PrefixCacheStats):
  int64_t prefix_queries_tokens = 0;    // prompt tokens looked up
  int64_t prefix_hits_tokens = 0;       // of those, found cached
  int64_t prefix_queries_requests = 0;  // FindCachedPrefix calls
  int64_t prefix_hits_requests = 0;     // calls that found at least one block
};

class KvCacheManager {
 public:
  // Precondition: options.Validate() is OK (config is validated in main).
  explicit KvCacheManager(const KvCacheManagerOptions& options);
  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  // The longest run of full blocks at the start of `token_ids` whose chained
  // hashes (with `cache_salt`) hit the cache, leaving at least one token to
  // compute: at most (token_ids.size() - 1) / block_size blocks. Takes no refs.
  // Updates the prefix counters on every call, so call it once per admission
  // attempt. With prefix caching off, returns an empty prefix and counts nothing.
  CachedPrefix FindCachedPrefix(std::span<const int32_t> token_ids, uint64_t cache_salt = 0);

  // Grows the block table of `seq` to cover num_computed_tokens(seq) +
  // num_new_tokens slots, allocating only the missing blocks.
  // First call for `seq`: registers it, starting from `prefix` (refs taken on
  // its blocks; num_computed_tokens becomes prefix.num_cached_tokens; the
  // prefix's salt becomes the sequence's salt). Later calls: `prefix` must be
  // empty.
  // All or nothing. Failures, with no state changed:
  //   kResourceExhausted: not enough free blocks (the prefix blocks that sit in
  //     the free queue count against the free blocks: touching removes them).
  //   kFailedPrecondition: `prefix` is stale (a block was evicted since
  //     FindCachedPrefix); look it up again.
  //   kInvalidArgument: num_new_tokens < 0; computed + new > token_ids.size();
  //     a malformed prefix, or one passed for a known sequence or with prefix
  //     caching off.
  // `token_ids` are all the sequence's tokens so far (prompt + generated).
  [[nodiscard]] absl::Status Allocate(SeqId seq, std::span<const int32_t> token_ids,
                                      int64_t num_new_tokens, const CachedPrefix& prefix = {});

  // Records that the first `num_computed_tokens` tokens of `seq` have KV in its
  // blocks. Each block that became full is hashed (chained) and entered into
  // the prefix cache; when another block already holds that hash, the
  // existing entry wins and this block stays uncached.
  // Failures, with no state changed: kNotFound (unknown seq); kInvalidArgument
  // when num_computed_tokens decreases, exceeds the table's slots, or exceeds
  // token_ids.size().
  [[nodiscard]] absl::Status CommitComputed(SeqId seq, std::span<const int32_t> token_ids,
                                            int64_t num_computed_tokens);

  // Releases every block of `seq` tail-first (so its tail is evicted before its
  // head) and forgets it. Cached blocks stay findable until evicted.
  // kNotFound, changing nothing, when `seq` is unknown (safe to ignore on
  // cancellation paths that may run before admission).
  [[nodiscard]] absl::Status Free(SeqId seq);

  // The block table of `seq` (empty when unknown). Borrowed: valid until the
  // next non-const call.
  std::span<const BlockId> BlockTable(SeqId seq) const;
  bool Contains(SeqId seq) const { return seqs_.contains(seq); }
  // Tokens of `seq` whose KV is computed (0 when unknown).
  int64_t NumComputedTokens(SeqId seq) const;
  int32_t NumSequences() const { return static_cast<int32_t>(seqs_.size()); }

  int32_t block_size() const { return options_.block_size; }
  int32_t NumFreeBlocks() const { return pool_.num_free_blocks(); }
  // Whether `num_blocks` fresh blocks could be allocated now.
  bool CanAllocate(int64_t num_blocks) const { return num_blocks <= pool_.num_free_blocks(); }
  KvCacheStats Stats() const;

  // The underlying pool, read-only (ref counts, free order; tests and debug).
  const BlockPool& pool() const { return pool_; }

  // Verifies invariants 1-5 in O(num_blocks + total table size); kInternal
  // names the first violation.
  [[nodiscard]] absl::Status CheckInvariants() const;

 private:
  struct SeqState {
    std::vector<BlockId> blocks;         // the block table
    std::vector<uint64_t> block_hashes;  // chained hashes of the committed full blocks
    // For each hashed block, the current ref of the cached copy of its content
    // when it was committed (itself, or the block that cached it first), or
    // nullopt when it could not be cached. Parent identity for the next block.
    std::vector<std::optional<CachedBlockRef>> block_refs;
    int64_t num_computed_tokens = 0;
    uint64_t cache_salt = 0;
  };

  int64_t BlocksFor(int64_t num_tokens) const {
    return (num_tokens + options_.block_size - 1) / options_.block_size;
  }
  std::span<const int32_t> BlockTokens(std::span<const int32_t> token_ids, int64_t i) const {
    return token_ids.subspan(static_cast<size_t>(i * options_.block_size),
                             static_cast<size_t>(options_.block_size));
  }
  [[nodiscard]] absl::Status AllocateNew(SeqId seq, std::span<const int32_t> token_ids,
                                         int64_t num_new_tokens, const CachedPrefix& prefix);

  const KvCacheManagerOptions options_;
  BlockPool pool_;
  absl::flat_hash_map<SeqId, SeqState> seqs_;
  KvCacheStats counters_;  // only the prefix_* fields are maintained here
};

}  // namespace tandem
