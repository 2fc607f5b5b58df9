// KvCacheManager allocation and prefix caching: prefix sharing and LRU
// eviction, the last prompt block never served from the cache, decode and
// chunked prefill committing (and caching) block by block, concurrent
// duplicates, cache salts, and prefix caching turned off.
// Helpers (Ids, Range, Prefill, SmallOptions, ...): kv_cache_manager_test_util.h.

#include <cstdint>
#include <vector>

#include "engine/core/kv_cache_manager.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/kv_cache_manager_test_util.h"

namespace tandem {
namespace {

using namespace kv_cache_manager_test;  // NOLINT(build/namespaces): the shared helpers

TEST(KvCacheManagerTest, PrefillSharesPrefixAndEvictsLeastRecentlyUsed) {
  KvCacheManager m(SmallOptions());
  const std::vector<int32_t> common = Range(0, 12);  // 3 full blocks
  const std::vector<int32_t> prompt0 = Concat(common, {100, 101, 102});

  // Fully cache miss: 15 tokens need 4 blocks, ids in order.
  CachedPrefix p0 = m.FindCachedPrefix(prompt0);
  EXPECT_TRUE(p0.blocks.empty());
  EXPECT_EQ(p0.num_cached_tokens, 0);
  ASSERT_TRUE(m.Allocate(SeqId(0), prompt0, 15, p0).ok());
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1, 2, 3}));
  ASSERT_TRUE(m.CommitComputed(SeqId(0), prompt0, 15).ok());
  ASSERT_INVARIANTS(m);

  // The three full blocks are cached under the chained hashes; the partial
  // fourth block is not.
  const std::vector<uint64_t> hashes = ChainedBlockHashes(prompt0, kBlockSize, 0, 10);
  ASSERT_EQ(hashes.size(), 3u);
  EXPECT_EQ(m.pool().cached_hash(BlockId(0)), hashes[0]);
  EXPECT_EQ(m.pool().cached_hash(BlockId(1)), hashes[1]);
  EXPECT_EQ(m.pool().cached_hash(BlockId(2)), hashes[2]);
  EXPECT_EQ(m.pool().cached_hash(BlockId(3)), std::nullopt);
  EXPECT_EQ(m.Stats().num_cached_blocks, 3);

  // Cache hit in the common prefix: only one new block.
  const std::vector<int32_t> prompt1 = Concat(common, {200, 201, 202});
  CachedPrefix p1 = m.FindCachedPrefix(prompt1);
  EXPECT_EQ(p1.blocks, Ids({0, 1, 2}));
  EXPECT_EQ(p1.num_cached_tokens, 12);
  ASSERT_TRUE(m.Allocate(SeqId(1), prompt1, 3, p1).ok());
  EXPECT_EQ(Table(m, SeqId(1)), Ids({0, 1, 2, 4}));
  EXPECT_EQ(m.NumComputedTokens(SeqId(1)), 12);
  EXPECT_EQ(Ref(m, 0), 2);
  EXPECT_EQ(Ref(m, 1), 2);
  EXPECT_EQ(Ref(m, 2), 2);
  EXPECT_EQ(Ref(m, 3), 1);
  EXPECT_EQ(Ref(m, 4), 1);
  ASSERT_TRUE(m.CommitComputed(SeqId(1), prompt1, 15).ok());
  ASSERT_INVARIANTS(m);

  KvCacheStats stats = m.Stats();
  EXPECT_EQ(stats.prefix_queries_requests, 2);
  EXPECT_EQ(stats.prefix_hits_requests, 1);
  EXPECT_EQ(stats.prefix_queries_tokens, 30);
  EXPECT_EQ(stats.prefix_hits_tokens, 12);
  EXPECT_EQ(stats.num_used_blocks, 5);
  EXPECT_EQ(stats.num_free_blocks, 5);

  // Free tail-first: seq 0 returns only its private block 3.
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  EXPECT_EQ(m.pool().FreeQueue(), Ids({5, 6, 7, 8, 9, 3}));
  EXPECT_EQ(Ref(m, 0), 1);
  ASSERT_TRUE(m.Free(SeqId(1)).ok());
  EXPECT_EQ(m.pool().FreeQueue(), Ids({5, 6, 7, 8, 9, 3, 4, 2, 1, 0}));
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  EXPECT_EQ(m.Stats().num_cached_blocks, 3);  // free but still cached
  ASSERT_INVARIANTS(m);

  // Two unrelated 16-token prompts (4 blocks each) take the 8 least recently
  // used blocks: never-cached blocks first, then block 2 (the common prefix's
  // tail), evicting its cache entry.
  ASSERT_TRUE(m.Allocate(SeqId(2), Range(1000, 16), 16).ok());
  EXPECT_EQ(Table(m, SeqId(2)), Ids({5, 6, 7, 8}));
  ASSERT_TRUE(m.Allocate(SeqId(3), Range(2000, 16), 16).ok());
  EXPECT_EQ(Table(m, SeqId(3)), Ids({9, 3, 4, 2}));
  EXPECT_EQ(m.pool().cached_hash(BlockId(2)), std::nullopt);
  EXPECT_EQ(m.pool().FreeQueue(), Ids({1, 0}));
  ASSERT_INVARIANTS(m);

  // The chain now breaks at the evicted block: blocks 0 and 1 still hit.
  const std::vector<int32_t> prompt4 = Concat(common, {300});
  CachedPrefix p4 = m.FindCachedPrefix(prompt4);
  EXPECT_EQ(p4.blocks, Ids({0, 1}));
  EXPECT_EQ(p4.num_cached_tokens, 8);

  ASSERT_TRUE(m.Free(SeqId(2)).ok());
  ASSERT_TRUE(m.Free(SeqId(3)).ok());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  ASSERT_INVARIANTS(m);
}

TEST(KvCacheManagerTest, NeverReturnsTheWholePrompt) {
  KvCacheManager m(SmallOptions());
  const std::vector<int32_t> prompt = Range(0, 12);  // exactly 3 full blocks
  Prefill(m, SeqId(0), prompt);
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1, 2}));
  EXPECT_EQ(m.Stats().num_cached_blocks, 3);
  ASSERT_TRUE(m.Free(SeqId(0)).ok());

  // Every block hits, but the last one is dropped so one token is computed.
  CachedPrefix same = m.FindCachedPrefix(prompt);
  EXPECT_EQ(same.blocks, Ids({0, 1}));
  EXPECT_EQ(same.num_cached_tokens, 8);
  // One token more: all three blocks may be reused.
  const std::vector<int32_t> longer = Concat(prompt, {99});
  CachedPrefix more = m.FindCachedPrefix(longer);
  EXPECT_EQ(more.blocks, Ids({0, 1, 2}));
  EXPECT_EQ(more.num_cached_tokens, 12);
  // Prompts shorter than a block, or empty, never hit.
  EXPECT_TRUE(m.FindCachedPrefix(Range(0, 4)).blocks.empty());
  EXPECT_TRUE(m.FindCachedPrefix({}).blocks.empty());

  KvCacheStats stats = m.Stats();
  EXPECT_EQ(stats.prefix_queries_requests, 5);
  EXPECT_EQ(stats.prefix_hits_requests, 2);
  EXPECT_EQ(stats.prefix_queries_tokens, 12 + 12 + 13 + 4 + 0);
  EXPECT_EQ(stats.prefix_hits_tokens, 8 + 12);

  // Admission with the 2-block hit recomputes the third block into a new one;
  // its hash is already held by block 2, so that entry is kept.
  ASSERT_TRUE(m.Allocate(SeqId(1), prompt, 4, same).ok());
  EXPECT_EQ(Table(m, SeqId(1)), Ids({0, 1, 3}));
  ASSERT_TRUE(m.CommitComputed(SeqId(1), prompt, 12).ok());
  EXPECT_EQ(m.pool().cached_hash(BlockId(3)), std::nullopt);
  EXPECT_EQ(m.Stats().num_cached_blocks, 3);
  ASSERT_INVARIANTS(m);
  ASSERT_TRUE(m.Free(SeqId(1)).ok());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
}

TEST(KvCacheManagerTest, DecodeFillsThePartialBlockThenCachesIt) {
  KvCacheManager m(SmallOptions());
  std::vector<int32_t> tokens = Range(0, 6);
  Prefill(m, SeqId(0), tokens);
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1}));
  EXPECT_EQ(m.Stats().num_cached_blocks, 1);  // block 1 holds 2 of 4 tokens

  // Decode: each step appends the sampled token and computes its KV.
  for (int32_t next : {6, 7}) {
    tokens.push_back(next);
    ASSERT_TRUE(m.Allocate(SeqId(0), tokens, 1).ok());
    ASSERT_TRUE(m.CommitComputed(SeqId(0), tokens, static_cast<int64_t>(tokens.size())).ok());
  }
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1}));  // 8 tokens fit in 2 blocks
  EXPECT_EQ(m.Stats().num_cached_blocks, 2);   // block 1 became full
  EXPECT_EQ(m.pool().cached_hash(BlockId(1)), ChainedBlockHashes(tokens, kBlockSize, 0, 2).back());

  // The ninth token needs a third block.
  tokens.push_back(8);
  ASSERT_TRUE(m.Allocate(SeqId(0), tokens, 1).ok());
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1, 2}));
  ASSERT_TRUE(m.CommitComputed(SeqId(0), tokens, 9).ok());
  ASSERT_INVARIANTS(m);

  // Generated tokens are reusable prefix too.
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  CachedPrefix p = m.FindCachedPrefix(tokens);
  EXPECT_EQ(p.blocks, Ids({0, 1}));
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
}

TEST(KvCacheManagerTest, ChunkedPrefillCommitsBlockByBlock) {
  KvCacheManager m(SmallOptions());
  const std::vector<int32_t> prompt = Range(0, 14);
  CachedPrefix none = m.FindCachedPrefix(prompt);
  ASSERT_TRUE(m.Allocate(SeqId(0), prompt, 5, none).ok());  // chunk 1: tokens 0-4
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1}));
  ASSERT_TRUE(m.CommitComputed(SeqId(0), prompt, 5).ok());
  EXPECT_EQ(m.Stats().num_cached_blocks, 1);
  ASSERT_TRUE(m.Allocate(SeqId(0), prompt, 5).ok());  // chunk 2: tokens 5-9
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1, 2}));
  ASSERT_TRUE(m.CommitComputed(SeqId(0), prompt, 10).ok());
  EXPECT_EQ(m.Stats().num_cached_blocks, 2);
  ASSERT_TRUE(m.Allocate(SeqId(0), prompt, 4).ok());  // chunk 3: tokens 10-13
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1, 2, 3}));
  ASSERT_TRUE(m.CommitComputed(SeqId(0), prompt, 14).ok());
  EXPECT_EQ(m.Stats().num_cached_blocks, 3);
  ASSERT_INVARIANTS(m);
  // The same chain as a one-shot prefill.
  const std::vector<uint64_t> hashes = ChainedBlockHashes(prompt, kBlockSize, 0, 10);
  for (int32_t i = 0; i < 3; ++i) EXPECT_EQ(m.pool().cached_hash(BlockId(i)), hashes[i]);
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
}

TEST(KvCacheManagerTest, ConcurrentDuplicatePrefixKeepsFirstCachedBlock) {
  KvCacheManager m(SmallOptions());
  const std::vector<int32_t> prompt = Range(0, 9);
  // Both admitted before either computes: no sharing possible yet.
  ASSERT_TRUE(m.Allocate(SeqId(0), prompt, 9, m.FindCachedPrefix(prompt)).ok());
  ASSERT_TRUE(m.Allocate(SeqId(1), prompt, 9, m.FindCachedPrefix(prompt)).ok());
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1, 2}));
  EXPECT_EQ(Table(m, SeqId(1)), Ids({3, 4, 5}));
  ASSERT_TRUE(m.CommitComputed(SeqId(1), prompt, 9).ok());
  ASSERT_TRUE(m.CommitComputed(SeqId(0), prompt, 9).ok());
  // Seq 1 committed first, so its blocks hold the entries.
  EXPECT_EQ(m.Stats().num_cached_blocks, 2);
  EXPECT_TRUE(m.pool().cached_hash(BlockId(3)).has_value());
  EXPECT_FALSE(m.pool().cached_hash(BlockId(0)).has_value());
  ASSERT_INVARIANTS(m);
  // A third sequence shares seq 1's blocks.
  const std::vector<int32_t> third = Concat(Range(0, 8), {77});
  CachedPrefix p = m.FindCachedPrefix(third);
  EXPECT_EQ(p.blocks, Ids({3, 4}));
  ASSERT_TRUE(m.Allocate(SeqId(2), third, 1, p).ok());
  EXPECT_EQ(Table(m, SeqId(2)), Ids({3, 4, 6}));
  EXPECT_EQ(Ref(m, 3), 2);
  EXPECT_EQ(Ref(m, 4), 2);
  ASSERT_INVARIANTS(m);
  for (int64_t s = 0; s < 3; ++s) ASSERT_TRUE(m.Free(SeqId(s)).ok());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  ASSERT_INVARIANTS(m);
}

TEST(KvCacheManagerTest, CacheSaltSeparatesPrefixes) {
  KvCacheManager m(SmallOptions());
  const std::vector<int32_t> prompt = Range(0, 9);
  Prefill(m, SeqId(0), prompt, /*salt=*/1);
  EXPECT_TRUE(m.FindCachedPrefix(prompt, /*cache_salt=*/0).blocks.empty());
  EXPECT_TRUE(m.FindCachedPrefix(prompt, /*cache_salt=*/2).blocks.empty());
  CachedPrefix p = m.FindCachedPrefix(prompt, /*cache_salt=*/1);
  EXPECT_EQ(p.blocks, Ids({0, 1}));
  EXPECT_EQ(p.cache_salt, 1u);
  // The salt carries over to the sequence's own commits.
  const std::vector<int32_t> longer = Concat(Range(0, 8), Range(40, 5));
  ASSERT_TRUE(m.Allocate(SeqId(1), longer, 5, p).ok());
  ASSERT_TRUE(m.CommitComputed(SeqId(1), longer, 13).ok());
  EXPECT_EQ(m.pool().cached_hash(BlockId(3)),
            ChainedBlockHashes(longer, kBlockSize, /*cache_salt=*/1, 3).back());
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  ASSERT_TRUE(m.Free(SeqId(1)).ok());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  ASSERT_INVARIANTS(m);
}

TEST(KvCacheManagerTest, PrefixCachingDisabledNeverHits) {
  KvCacheManagerOptions options = SmallOptions();
  options.enable_prefix_caching = false;
  KvCacheManager m(options);
  const std::vector<int32_t> prompt = Range(0, 9);
  Prefill(m, SeqId(0), prompt);
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  CachedPrefix p = m.FindCachedPrefix(prompt);
  EXPECT_TRUE(p.blocks.empty());
  ASSERT_TRUE(m.Allocate(SeqId(1), prompt, 9, p).ok());
  EXPECT_EQ(Table(m, SeqId(1)), Ids({3, 4, 5}));  // LRU order, no reuse
  ASSERT_TRUE(m.CommitComputed(SeqId(1), prompt, 9).ok());
  const KvCacheStats stats = m.Stats();
  EXPECT_EQ(stats.num_cached_blocks, 0);
  EXPECT_EQ(stats.prefix_queries_requests, 0);
  EXPECT_EQ(stats.prefix_queries_tokens, 0);
  ASSERT_INVARIANTS(m);
  ASSERT_TRUE(m.Free(SeqId(1)).ok());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
}

}  // namespace
}  // namespace tandem
