#include "engine/core/block_pool.h"

#include <algorithm>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"

namespace tandem {

BlockPool::BlockPool(int32_t num_blocks) {
  ABSL_RAW_CHECK(num_blocks >= 0, "num_blocks must be >= 0");
  blocks_.resize(static_cast<size_t>(num_blocks));
  for (int32_t id = 0; id < num_blocks; ++id) PushBack(id);
}

BlockPool::Block& BlockPool::At(BlockId block) {
  ABSL_RAW_CHECK(block.value() >= 0 && block.value() < num_blocks(), "block id out of range");
  return blocks_[static_cast<size_t>(block.value())];
}

const BlockPool::Block& BlockPool::At(BlockId block) const {
  ABSL_RAW_CHECK(block.value() >= 0 && block.value() < num_blocks(), "block id out of range");
  return blocks_[static_cast<size_t>(block.value())];
}

void BlockPool::PushBack(int32_t id) {
  Block& b = blocks_[id];
  ABSL_RAW_CHECK(!b.in_free_queue, "block already in the free queue");
  b.prev = tail_;
  b.next = kNone;
  if (tail_ != kNone) {
    blocks_[tail_].next = id;
  } else {
    head_ = id;
  }
  tail_ = id;
  b.in_free_queue = true;
  ++num_free_;
}

void BlockPool::Unlink(int32_t id) {
  Block& b = blocks_[id];
  ABSL_RAW_CHECK(b.in_free_queue, "block not in the free queue");
  if (b.prev != kNone) {
    blocks_[b.prev].next = b.next;
  } else {
    head_ = b.next;
  }
  if (b.next != kNone) {
    blocks_[b.next].prev = b.prev;
  } else {
    tail_ = b.prev;
  }
  b.prev = b.next = kNone;
  b.in_free_queue = false;
  --num_free_;
}

int32_t BlockPool::PopFront() {
  const int32_t id = head_;
  ABSL_RAW_CHECK(id != kNone, "free queue empty");
  Unlink(id);
  return id;
}

void BlockPool::Uncache(int32_t id) {
  Block& b = blocks_[id];
  if (!b.cached) return;
  cache_.erase(b.hash);  // invariant 3: the entry for b.hash is this block
  if (event_log_ != nullptr) event_log_->Removed(b.hash);
  b.cached = false;
  b.hash = b.epoch = b.cache_salt = 0;
  b.parent = kRootBlockRef;
  b.token_ids.clear();
}

absl::StatusOr<std::vector<BlockId>> BlockPool::Allocate(int64_t n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("Allocate: n = ", n, " < 0"));
  if (n > num_free_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV block pool: ", n, " blocks requested, ", num_free_, " free"));
  }
  std::vector<BlockId> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = PopFront();
    Uncache(id);  // eviction
    blocks_[id].ref_count = 1;
    out.emplace_back(id);
  }
  return out;
}

void BlockPool::Touch(BlockId block) {
  Block& b = At(block);
  ABSL_RAW_CHECK(b.ref_count > 0 || b.cached, "Touch on a free block that holds no cached key");
  if (b.ref_count == 0) Unlink(block.value());
  ++b.ref_count;
}

void BlockPool::Free(std::span<const BlockId> blocks) {
  for (BlockId block : blocks) {
    Block& b = At(block);
    ABSL_RAW_CHECK(b.ref_count > 0, "Free of a block with ref_count 0 (double free)");
    if (--b.ref_count == 0) PushBack(block.value());
  }
}

bool BlockPool::CacheFullBlock(BlockId block, const CachedBlockKey& key) {
  Block& b = At(block);
  ABSL_RAW_CHECK(b.ref_count > 0, "CacheFullBlock on a block nobody owns");
  if (b.cached) {
    ABSL_RAW_CHECK(b.hash == key.hash, "block already cached under a different hash");
    return true;
  }
  const auto [it, inserted] = cache_.try_emplace(key.hash, block.value());
  if (!inserted) {
    if (IsCurrent(blocks_[it->second].parent)) return false;
    Uncache(it->second);  // unreachable entry: its parent was evicted
    cache_.emplace(key.hash, block.value());
  }
  b.cached = true;
  b.hash = key.hash;
  b.epoch = next_epoch_++;
  b.parent = key.parent;
  b.cache_salt = key.cache_salt;
  b.token_ids.assign(key.token_ids.begin(), key.token_ids.end());
  if (event_log_ != nullptr) event_log_->Stored(key.hash);
  return true;
}

std::optional<BlockId> BlockPool::Lookup(const CachedBlockKey& key) const {
  const auto it = cache_.find(key.hash);
  if (it == cache_.end()) return std::nullopt;
  const Block& b = blocks_[it->second];
  // A 64-bit collision must cost a miss, never another prefix's KV.
  if (b.parent != key.parent || b.cache_salt != key.cache_salt ||
      !std::equal(b.token_ids.begin(), b.token_ids.end(), key.token_ids.begin(),
                  key.token_ids.end())) {
    return std::nullopt;
  }
  return BlockId(it->second);
}

int32_t BlockPool::ref_count(BlockId block) const { return At(block).ref_count; }

bool BlockPool::is_free(BlockId block) const { return At(block).in_free_queue; }

std::optional<uint64_t> BlockPool::cached_hash(BlockId block) const {
  const Block& b = At(block);
  if (!b.cached) return std::nullopt;
  return b.hash;
}

std::optional<CachedBlockRef> BlockPool::cached_ref(BlockId block) const {
  const Block& b = At(block);
  if (!b.cached) return std::nullopt;
  return CachedBlockRef{block, b.epoch};
}

bool BlockPool::IsCurrent(const CachedBlockRef& ref) const {
  if (ref == kRootBlockRef) return true;
  const int32_t id = ref.block.value();
  if (id < 0 || id >= num_blocks()) return false;
  const Block& b = blocks_[id];
  return b.cached && b.epoch == ref.epoch;
}

std::vector<BlockId> BlockPool::FreeQueue() const {
  std::vector<BlockId> out;
  out.reserve(static_cast<size_t>(num_free_));
  for (int32_t id = head_; id != kNone && out.size() <= blocks_.size(); id = blocks_[id].next) {
    out.emplace_back(id);
  }
  return out;
}

absl::Status BlockPool::CheckInvariants() const {
  const int32_t n = num_blocks();
  // Walk the queue forward, checking links, and mark membership.
  std::vector<char> seen(blocks_.size(), 0);
  int32_t count = 0;
  int32_t prev = kNone;
  for (int32_t id = head_; id != kNone; id = blocks_[id].next) {
    if (id < 0 || id >= n) return absl::InternalError(absl::StrCat("free queue holds bad id ", id));
    if (seen[id]) return absl::InternalError(absl::StrCat("block ", id, " twice in free queue"));
    seen[id] = 1;
    if (blocks_[id].prev != prev) {
      return absl::InternalError(absl::StrCat("block ", id, " has a broken prev link"));
    }
    prev = id;
    ++count;
  }
  if (prev != tail_) return absl::InternalError("free queue tail mismatch");
  if (count != num_free_) {
    return absl::InternalError(
        absl::StrCat("free queue has ", count, " blocks, counter says ", num_free_));
  }
  int32_t num_cached = 0;
  for (int32_t id = 0; id < n; ++id) {
    const Block& b = blocks_[id];
    if (b.ref_count < 0) return absl::InternalError(absl::StrCat("block ", id, " ref_count < 0"));
    const bool should_be_free = b.ref_count == 0;
    if (should_be_free != static_cast<bool>(seen[id]) || b.in_free_queue != should_be_free) {
      return absl::InternalError(absl::StrCat("block ", id, " ref_count ", b.ref_count,
                                              " but in_free_queue ", b.in_free_queue));
    }
    if (b.cached) {
      ++num_cached;
      if (b.epoch == 0 || b.epoch >= next_epoch_) {
        return absl::InternalError(absl::StrCat("cached block ", id, " has a bad epoch"));
      }
      const auto it = cache_.find(b.hash);
      if (it == cache_.end() || it->second != id) {
        return absl::InternalError(absl::StrCat("cached block ", id, " not indexed by its hash"));
      }
    }
  }
  for (const auto& [hash, id] : cache_) {
    if (id < 0 || id >= n || !blocks_[id].cached || blocks_[id].hash != hash) {
      return absl::InternalError(absl::StrCat("cache entry ", hash, " -> ", id, " is stale"));
    }
  }
  if (num_cached != num_cached_blocks()) {
    return absl::InternalError("cached-block count disagrees with the cache map");
  }
  return absl::OkStatus();
}

}  // namespace tandem
