// BlockPool: the bookkeeping of one worker's paged KV memory: which of the
// block ids [0, num_blocks) are in use, by how many owners, which are free and
// in what eviction order, and which hold a cached prefix that a later request
// may reuse. The memory itself is KvCache (engine/model/kv_cache.h); block ids
// index into it. The pool never touches tensors and never computes hashes: the
// caller (KvCacheManager) hands it the hash and the key to verify.
//
// Free queue, least recently used first. A block whose last owner frees it goes
// to the back. A freed block that holds a cached prefix stays findable through
// Lookup() until it is evicted, which happens exactly when Allocate() pops it
// from the front for a new owner; Touch() on such a block (a prefix-cache hit)
// takes it out of the queue wherever it is. So free blocks are also the cache's
// eviction candidates, oldest first, as in vLLM v1's FreeKVCacheBlockQueue.
// Every operation is O(1) per block (intrusive doubly linked list over ids,
// flat_hash_map for the cache); only CheckInvariants() and FreeQueue() scan.
//
// Invariants (CheckInvariants() verifies 1-3; 4 is Allocate's postcondition):
//  1. Every block has ref_count >= 0; a block is in the free queue iff its
//     ref_count is 0, and appears there at most once.
//  2. num_used_blocks() + num_free_blocks() == num_blocks().
//  3. The cache map holds hash -> block only for blocks whose stored key has
//     that hash, and every block marked cached has exactly its own hash in the
//     map pointing back at it (no duplicates: one block per hash). Cached
//     blocks have epochs in [1, next_epoch_), each taken once.
//  4. A block popped by Allocate() holds no cached key afterwards.
//
// Thread-safety: none. The engine loop thread owns the pool (STYLE.md 3).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/ids.h"
#include "engine/core/block_hash.h"
#include "engine/core/kv_event_log.h"

namespace tandem {

// Identity of one cached block's content: the block and the epoch (a pool-wide
// counter taken when it was cached). A ref stays "current" until the block is
// evicted or uncached; afterwards no current block has that ref again.
struct CachedBlockRef {
  BlockId block{-1};
  uint64_t epoch = 0;
  friend bool operator==(const CachedBlockRef&, const CachedBlockRef&) = default;
};
// The parent of a sequence's first block.
inline constexpr CachedBlockRef kRootBlockRef{};

// What a full block holds, as the prefix cache identifies it. `hash` is
// HashBlockTokens(parent's hash, token_ids, cache_salt) in production; the pool
// treats it as opaque. Lookup compares the salt, the tokens and the parent's
// *identity* (not its hash), so by induction along a chain a hit means the
// whole prefix is equal, whatever collisions the hash has: a collision costs a
// miss, never another prefix's KV.
struct CachedBlockKey {
  uint64_t hash = 0;
  CachedBlockRef parent = kRootBlockRef;  // current ref of the previous block
  uint64_t cache_salt = 0;
  std::span<const int32_t> token_ids;  // borrowed for the call; the pool copies
};

class BlockPool {
 public:
  // All `num_blocks` blocks start free, in id order (block 0 is allocated
  // first). Precondition: num_blocks >= 0.
  explicit BlockPool(int32_t num_blocks);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // Takes `n` blocks from the front of the free queue, evicting any cached
  // key they hold, and gives each ref_count 1. All or nothing: when fewer than
  // `n` blocks are free, returns kResourceExhausted and changes nothing.
  // kInvalidArgument when n < 0.
  [[nodiscard]] absl::StatusOr<std::vector<BlockId>> Allocate(int64_t n);

  // A prefix-cache hit: adds an owner to `block`, taking it out of the free
  // queue if it was there. Precondition: `block` is in use or holds a cached
  // key (touching a plain free block would hand out garbage KV).
  void Touch(BlockId block);

  // Drops one owner of each block, in the given order; blocks reaching
  // ref_count 0 go to the back of the free queue in that order. Callers free a
  // sequence's table tail-first, so a prefix's tail is evicted before its head.
  // Precondition: each block has ref_count > 0 at its turn.
  void Free(std::span<const BlockId> blocks);

  // Enters `block` (full, and owned by the caller) into the prefix cache under
  // `key`. Returns true when the block is cached under key.hash afterwards;
  // false when another block already holds key.hash with a current parent
  // (that entry is kept, this block stays uncached). An entry whose parent ref
  // is no longer current can never be hit again, so it is replaced (that
  // block just becomes uncached). Idempotent for the same hash.
  // Precondition: ref_count(block) > 0; the block is not cached under a
  // different hash.
  bool CacheFullBlock(BlockId block, const CachedBlockKey& key);

  // The block cached under key.hash whose parent ref, salt and tokens equal the
  // key's, or nullopt. No side effects: Touch() the result to use it.
  std::optional<BlockId> Lookup(const CachedBlockKey& key) const;

  // The current ref of `block` if it is cached, else nullopt.
  std::optional<CachedBlockRef> cached_ref(BlockId block) const;
  // Whether `ref` is kRootBlockRef or names a block still cached at that epoch.
  bool IsCurrent(const CachedBlockRef& ref) const;

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  // Blocks in the free queue, including evictable cached ones.
  int32_t num_free_blocks() const { return num_free_; }
  int32_t num_used_blocks() const { return num_blocks() - num_free_; }
  // Blocks holding a cached key (in use or free).
  int32_t num_cached_blocks() const { return static_cast<int32_t>(cache_.size()); }

  // Precondition for the accessors below: 0 <= block < num_blocks().
  int32_t ref_count(BlockId block) const;
  bool is_free(BlockId block) const;
  // The hash `block` is cached under, or nullopt.
  std::optional<uint64_t> cached_hash(BlockId block) const;

  // The free queue, front (next to be allocated) first. O(num_blocks); for
  // tests and debugging.
  std::vector<BlockId> FreeQueue() const;

  // Every block cached and every cached key dropped (evicted, or replaced
  // as unreachable) from now on is recorded in `log` (may be null: none);
  // it must outlive the pool.
  void set_event_log(KvEventLog* log) { event_log_ = log; }

  // Verifies invariants 1-4 in O(num_blocks); kInternal names the first
  // violation. For tests and debug builds.
  [[nodiscard]] absl::Status CheckInvariants() const;

 private:
  static constexpr int32_t kNone = -1;

  struct Block {
    int32_t ref_count = 0;
    // Free-queue links (block ids, kNone at the ends); valid iff in_free_queue.
    int32_t prev = kNone;
    int32_t next = kNone;
    bool in_free_queue = false;
    // Cached key; valid iff cached.
    bool cached = false;
    uint64_t hash = 0;
    uint64_t epoch = 0;  // > 0 while cached
    CachedBlockRef parent;
    uint64_t cache_salt = 0;
    std::vector<int32_t> token_ids;
  };

  Block& At(BlockId block);
  const Block& At(BlockId block) const;
  void PushBack(int32_t id);
  void Unlink(int32_t id);
  int32_t PopFront();
  void Uncache(int32_t id);

  std::vector<Block> blocks_;
  int32_t head_ = kNone;  // next block to allocate
  int32_t tail_ = kNone;  // most recently freed block
  int32_t num_free_ = 0;
  uint64_t next_epoch_ = 1;
  KvEventLog* event_log_ = nullptr;
  absl::flat_hash_map<uint64_t, int32_t> cache_;  // hash -> block id
};

}  // namespace tandem
