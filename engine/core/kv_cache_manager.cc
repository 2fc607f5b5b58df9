#include "engine/core/kv_cache_manager.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

std::string Name(SeqId seq) { return absl::StrCat("seq:", seq.value()); }

}  // namespace

absl::Status KvCacheManagerOptions::Validate() const {
  if (num_blocks < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_blocks = ", num_blocks, " < 0"));
  }
  if (block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("block_size = ", block_size, " <= 0"));
  }
  if (hash_fn == nullptr) return absl::InvalidArgumentError("hash_fn is null");
  return absl::OkStatus();
}

KvCacheManager::KvCacheManager(const KvCacheManagerOptions& options)
    : options_(options), pool_(options.num_blocks) {
  pool_.set_event_log(options.event_log);
  ABSL_RAW_CHECK(options_.Validate().ok(), "invalid KvCacheManagerOptions");
}

CachedPrefix KvCacheManager::FindCachedPrefix(std::span<const int32_t> token_ids,
                                              uint64_t cache_salt) {
  CachedPrefix prefix;
  prefix.cache_salt = cache_salt;
  if (!options_.enable_prefix_caching) return prefix;
  const int64_t num_tokens = static_cast<int64_t>(token_ids.size());
  // At least one token must remain to compute (see the file comment).
  const int64_t max_blocks = num_tokens > 0 ? (num_tokens - 1) / options_.block_size : 0;
  uint64_t parent_hash = kRootParentHash;
  CachedBlockRef parent = kRootBlockRef;
  for (int64_t i = 0; i < max_blocks; ++i) {
    const std::span<const int32_t> tokens = BlockTokens(token_ids, i);
    const uint64_t hash = options_.hash_fn(parent_hash, tokens, cache_salt);
    const std::optional<BlockId> block = pool_.Lookup({hash, parent, cache_salt, tokens});
    if (!block.has_value()) break;
    prefix.blocks.push_back(*block);
    parent_hash = hash;
    parent = *pool_.cached_ref(*block);
  }
  prefix.num_cached_tokens = static_cast<int64_t>(prefix.blocks.size()) * options_.block_size;
  ++counters_.prefix_queries_requests;
  counters_.prefix_queries_tokens += num_tokens;
  counters_.prefix_hits_tokens += prefix.num_cached_tokens;
  if (!prefix.blocks.empty()) ++counters_.prefix_hits_requests;
  return prefix;
}

absl::Status KvCacheManager::Allocate(SeqId seq, std::span<const int32_t> token_ids,
                                      int64_t num_new_tokens, const CachedPrefix& prefix) {
  if (num_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_new_tokens = ", num_new_tokens, " < 0"));
  }
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return AllocateNew(seq, token_ids, num_new_tokens, prefix);

  if (!prefix.blocks.empty() || prefix.num_cached_tokens != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Name(seq), " is already allocated; a prefix is only taken at admission"));
  }
  SeqState& state = it->second;
  const int64_t num_tokens = state.num_computed_tokens + num_new_tokens;
  if (num_tokens > static_cast<int64_t>(token_ids.size())) {
    return absl::InvalidArgumentError(absl::StrCat(Name(seq), ": ", state.num_computed_tokens,
                                                   " computed + ", num_new_tokens, " new > ",
                                                   token_ids.size(), " tokens"));
  }
  const int64_t num_missing =
      std::max<int64_t>(0, BlocksFor(num_tokens) - static_cast<int64_t>(state.blocks.size()));
  absl::StatusOr<std::vector<BlockId>> fresh = pool_.Allocate(num_missing);
  if (!fresh.ok()) return fresh.status();
  state.blocks.insert(state.blocks.end(), fresh->begin(), fresh->end());
  return absl::OkStatus();
}

absl::Status KvCacheManager::AllocateNew(SeqId seq, std::span<const int32_t> token_ids,
                                         int64_t num_new_tokens, const CachedPrefix& prefix) {
  const int64_t num_prefix_blocks = static_cast<int64_t>(prefix.blocks.size());
  if (prefix.num_cached_tokens != num_prefix_blocks * options_.block_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefix of ", num_prefix_blocks, " blocks claims ", prefix.num_cached_tokens, " tokens"));
  }
  if (num_prefix_blocks > 0 && !options_.enable_prefix_caching) {
    return absl::InvalidArgumentError("cached prefix passed with prefix caching off");
  }
  const int64_t num_tokens = prefix.num_cached_tokens + num_new_tokens;
  if (num_tokens > static_cast<int64_t>(token_ids.size())) {
    return absl::InvalidArgumentError(absl::StrCat(Name(seq), ": ", prefix.num_cached_tokens,
                                                   " cached + ", num_new_tokens, " new > ",
                                                   token_ids.size(), " tokens"));
  }
  // Re-verify the prefix: the blocks must still hold these tokens' chain.
  SeqState state;
  state.cache_salt = prefix.cache_salt;
  state.block_hashes.reserve(static_cast<size_t>(num_prefix_blocks));
  state.block_refs.reserve(static_cast<size_t>(num_prefix_blocks));
  int64_t num_evictable = 0;
  uint64_t parent_hash = kRootParentHash;
  CachedBlockRef parent = kRootBlockRef;
  for (int64_t i = 0; i < num_prefix_blocks; ++i) {
    const std::span<const int32_t> tokens = BlockTokens(token_ids, i);
    const uint64_t hash = options_.hash_fn(parent_hash, tokens, prefix.cache_salt);
    const std::optional<BlockId> block = pool_.Lookup({hash, parent, prefix.cache_salt, tokens});
    if (block != prefix.blocks[static_cast<size_t>(i)]) {
      return absl::FailedPreconditionError(absl::StrCat(Name(seq), ": cached prefix block ", i,
                                                        " was evicted; look the prefix up again"));
    }
    if (pool_.is_free(*block)) ++num_evictable;
    parent_hash = hash;
    parent = *pool_.cached_ref(*block);
    state.block_hashes.push_back(hash);
    state.block_refs.push_back(parent);
  }
  const int64_t num_missing = std::max<int64_t>(0, BlocksFor(num_tokens) - num_prefix_blocks);
  // Touching an evictable prefix block takes it out of the free queue too.
  if (num_missing + num_evictable > pool_.num_free_blocks()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV block pool: ", Name(seq), " needs ", num_missing, " new blocks + ",
                     num_evictable, " cached free blocks, ", pool_.num_free_blocks(), " free"));
  }
  for (BlockId block : prefix.blocks) pool_.Touch(block);
  absl::StatusOr<std::vector<BlockId>> fresh = pool_.Allocate(num_missing);
  ABSL_RAW_CHECK(fresh.ok(), "allocation failed after the capacity check");
  state.blocks = prefix.blocks;
  state.blocks.insert(state.blocks.end(), fresh->begin(), fresh->end());
  state.num_computed_tokens = prefix.num_cached_tokens;
  seqs_.emplace(seq, std::move(state));
  return absl::OkStatus();
}

absl::Status KvCacheManager::CommitComputed(SeqId seq, std::span<const int32_t> token_ids,
                                            int64_t num_computed_tokens) {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("CommitComputed: unknown ", Name(seq)));
  }
  SeqState& state = it->second;
  const int64_t num_slots = static_cast<int64_t>(state.blocks.size()) * options_.block_size;
  if (num_computed_tokens < state.num_computed_tokens || num_computed_tokens > num_slots ||
      num_computed_tokens > static_cast<int64_t>(token_ids.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        Name(seq), ": num_computed_tokens ", num_computed_tokens, " outside [",
        state.num_computed_tokens, ", min(", num_slots, " slots, ", token_ids.size(), " tokens)]"));
  }
  state.num_computed_tokens = num_computed_tokens;
  if (!options_.enable_prefix_caching) return absl::OkStatus();
  const int64_t num_full = num_computed_tokens / options_.block_size;
  for (int64_t i = static_cast<int64_t>(state.block_hashes.size()); i < num_full; ++i) {
    const uint64_t parent_hash = i == 0 ? kRootParentHash : state.block_hashes[i - 1];
    const std::optional<CachedBlockRef> parent =
        i == 0 ? kRootBlockRef : state.block_refs[static_cast<size_t>(i - 1)];
    const std::span<const int32_t> tokens = BlockTokens(token_ids, i);
    const uint64_t hash = options_.hash_fn(parent_hash, tokens, state.cache_salt);
    state.block_hashes.push_back(hash);
    // The cache identifies a parent by its current ref. Without one (the
    // parent could not be cached, or its canonical copy was evicted), this
    // block could never be hit: leave it uncached.
    if (!parent.has_value() || !pool_.IsCurrent(*parent)) {
      state.block_refs.push_back(std::nullopt);
      continue;
    }
    const BlockId block = state.blocks[static_cast<size_t>(i)];
    const CachedBlockKey key{hash, *parent, state.cache_salt, tokens};
    // When another block already holds this content, that entry is kept and
    // becomes this block's canonical copy; on a true collision, Lookup misses.
    std::optional<CachedBlockRef> ref;
    if (pool_.CacheFullBlock(block, key)) {
      ref = pool_.cached_ref(block);
    } else if (const std::optional<BlockId> holder = pool_.Lookup(key); holder.has_value()) {
      ref = pool_.cached_ref(*holder);
    }
    state.block_refs.push_back(ref);
  }
  return absl::OkStatus();
}

absl::Status KvCacheManager::Free(SeqId seq) {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("Free: unknown ", Name(seq)));
  std::vector<BlockId> reversed(it->second.blocks.rbegin(), it->second.blocks.rend());
  pool_.Free(reversed);
  seqs_.erase(it);
  return absl::OkStatus();
}

std::span<const BlockId> KvCacheManager::BlockTable(SeqId seq) const {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return {};
  return it->second.blocks;
}

int64_t KvCacheManager::NumComputedTokens(SeqId seq) const {
  const auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : it->second.num_computed_tokens;
}

KvCacheStats KvCacheManager::Stats() const {
  KvCacheStats stats = counters_;
  stats.num_blocks = pool_.num_blocks();
  stats.num_used_blocks = pool_.num_used_blocks();
  stats.num_free_blocks = pool_.num_free_blocks();
  stats.num_cached_blocks = pool_.num_cached_blocks();
  return stats;
}

absl::Status KvCacheManager::CheckInvariants() const {
  if (absl::Status s = pool_.CheckInvariants(); !s.ok()) return s;
  std::vector<int32_t> holders(static_cast<size_t>(pool_.num_blocks()), 0);
  for (const auto& [seq, state] : seqs_) {
    for (BlockId block : state.blocks) {
      if (block.value() < 0 || block.value() >= pool_.num_blocks()) {
        return absl::InternalError(
            absl::StrCat(Name(seq), " holds out-of-range block ", block.value()));
      }
      ++holders[static_cast<size_t>(block.value())];
    }
    std::vector<BlockId> sorted = state.blocks;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return absl::InternalError(absl::StrCat(Name(seq), " holds a block twice"));
    }
    const int64_t num_slots = static_cast<int64_t>(state.blocks.size()) * options_.block_size;
    if (state.num_computed_tokens > num_slots) {
      return absl::InternalError(absl::StrCat(Name(seq), " computed ", state.num_computed_tokens,
                                              " tokens in ", num_slots, " slots"));
    }
    const size_t expected_hashes =
        options_.enable_prefix_caching
            ? static_cast<size_t>(state.num_computed_tokens / options_.block_size)
            : 0;
    if (state.block_hashes.size() != expected_hashes ||
        state.block_refs.size() != state.block_hashes.size()) {
      return absl::InternalError(absl::StrCat(Name(seq), " has ", state.block_hashes.size(),
                                              " block hashes, expected ", expected_hashes));
    }
    for (size_t i = 0; i < state.block_hashes.size(); ++i) {
      const std::optional<uint64_t> cached = pool_.cached_hash(state.blocks[i]);
      if (cached.has_value() && *cached != state.block_hashes[i]) {
        return absl::InternalError(
            absl::StrCat(Name(seq), " block ", i, " cached under a wrong hash"));
      }
    }
  }
  for (int32_t id = 0; id < pool_.num_blocks(); ++id) {
    if (pool_.ref_count(BlockId(id)) != holders[static_cast<size_t>(id)]) {
      return absl::InternalError(absl::StrCat("block ", id, " has ref_count ",
                                              pool_.ref_count(BlockId(id)), " but ",
                                              holders[static_cast<size_t>(id)], " holders"));
    }
  }
  if (!options_.enable_prefix_caching && pool_.num_cached_blocks() != 0) {
    return absl::InternalError("blocks cached with prefix caching off");
  }
  return absl::OkStatus();
}

}  // namespace tandem
