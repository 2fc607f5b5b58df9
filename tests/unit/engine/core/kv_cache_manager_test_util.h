// Shared helpers for the KvCacheManager tests (kv_cache_manager_*_test.cc,
// all in the kv_cache_manager_test binary), in the style of vLLM's
// tests/v1/core/test_prefix_caching.py: a tiny pool (10 blocks of 4 tokens),
// exact block ids after each step, exact ref counts, exact prefix hits and
// exact eviction order. Every test ends with all blocks free. Header-only.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/kv_cache_manager.h"
#include "gtest/gtest.h"

namespace tandem::kv_cache_manager_test {

inline constexpr int32_t kNumBlocks = 10;
inline constexpr int32_t kBlockSize = 4;

inline std::vector<BlockId> Ids(std::initializer_list<int32_t> ids) {
  std::vector<BlockId> out;
  for (int32_t id : ids) out.emplace_back(id);
  return out;
}

inline std::vector<BlockId> Table(const KvCacheManager& m, SeqId seq) {
  const std::span<const BlockId> t = m.BlockTable(seq);
  return {t.begin(), t.end()};
}

// Tokens start, start+1, ..., start+n-1.
inline std::vector<int32_t> Range(int32_t start, int32_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

inline std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

inline KvCacheManagerOptions SmallOptions() {
  KvCacheManagerOptions o;
  o.num_blocks = kNumBlocks;
  o.block_size = kBlockSize;
  return o;
}

#define ASSERT_INVARIANTS(m)                       \
  do {                                             \
    const absl::Status s_ = (m).CheckInvariants(); \
    ASSERT_TRUE(s_.ok()) << s_;                    \
  } while (0)

// Admits `seq` with its whole prompt in one step and commits it.
inline void Prefill(KvCacheManager& m, SeqId seq, const std::vector<int32_t>& prompt, uint64_t salt = 0) {
  const CachedPrefix prefix = m.FindCachedPrefix(prompt, salt);
  ASSERT_TRUE(m.Allocate(seq, prompt, prompt.size() - prefix.num_cached_tokens, prefix).ok());
  ASSERT_TRUE(m.CommitComputed(seq, prompt, static_cast<int64_t>(prompt.size())).ok());
}

inline int32_t Ref(const KvCacheManager& m, int32_t block) { return m.pool().ref_count(BlockId(block)); }

}  // namespace tandem::kv_cache_manager_test
