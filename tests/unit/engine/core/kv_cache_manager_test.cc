// Tests for KvCacheManager in the style of vLLM's
// tests/v1/core/test_prefix_caching.py: a tiny pool (10 blocks of 4 tokens),
// exact block ids after each step, exact ref counts, exact prefix hits and
// exact eviction order. Every test ends with all blocks free.

#include "engine/core/kv_cache_manager.h"

#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

constexpr int32_t kNumBlocks = 10;
constexpr int32_t kBlockSize = 4;

std::vector<BlockId> Ids(std::initializer_list<int32_t> ids) {
  std::vector<BlockId> out;
  for (int32_t id : ids) out.emplace_back(id);
  return out;
}

std::vector<BlockId> Table(const KvCacheManager& m, SeqId seq) {
  const std::span<const BlockId> t = m.BlockTable(seq);
  return {t.begin(), t.end()};
}

// Tokens start, start+1, ..., start+n-1.
std::vector<int32_t> Range(int32_t start, int32_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

KvCacheManagerOptions SmallOptions() {
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
void Prefill(KvCacheManager& m, SeqId seq, const std::vector<int32_t>& prompt, uint64_t salt = 0) {
  const CachedPrefix prefix = m.FindCachedPrefix(prompt, salt);
  ASSERT_TRUE(m.Allocate(seq, prompt, prompt.size() - prefix.num_cached_tokens, prefix).ok());
  ASSERT_TRUE(m.CommitComputed(seq, prompt, static_cast<int64_t>(prompt.size())).ok());
}

int32_t Ref(const KvCacheManager& m, int32_t block) { return m.pool().ref_count(BlockId(block)); }

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

TEST(KvCacheManagerTest, ResourceExhaustedLeavesNoTrace) {
  KvCacheManager m(SmallOptions());
  const std::vector<int32_t> common = Range(0, 12);
  Prefill(m, SeqId(0), Concat(common, {50}));  // blocks 0-3, 0-2 cached
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  EXPECT_EQ(m.pool().FreeQueue(), Ids({4, 5, 6, 7, 8, 9, 3, 2, 1, 0}));
  ASSERT_TRUE(m.Allocate(SeqId(1), Range(500, 20), 20).ok());
  EXPECT_EQ(Table(m, SeqId(1)), Ids({4, 5, 6, 7, 8}));
  EXPECT_EQ(m.NumFreeBlocks(), 5);  // 9, 3, and the cached 2, 1, 0

  // 21 tokens = 6 blocks: 3 cached + 3 new. Only 5 are free once the 3 cached
  // ones leave the free queue: 3 + 3 > 5.
  const std::vector<int32_t> big = Concat(common, Range(60, 9));
  CachedPrefix p = m.FindCachedPrefix(big);
  EXPECT_EQ(p.blocks, Ids({0, 1, 2}));
  EXPECT_FALSE(m.CanAllocate(6));
  const KvCacheStats before = m.Stats();
  const absl::Status s = m.Allocate(SeqId(2), big, 9, p);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_FALSE(m.Contains(SeqId(2)));
  EXPECT_TRUE(m.BlockTable(SeqId(2)).empty());
  EXPECT_EQ(m.pool().FreeQueue(), Ids({9, 3, 2, 1, 0}));
  EXPECT_EQ(Ref(m, 0), 0);
  EXPECT_EQ(m.Stats().num_cached_blocks, before.num_cached_blocks);
  EXPECT_EQ(m.Stats().num_free_blocks, before.num_free_blocks);
  ASSERT_INVARIANTS(m);

  // A running sequence that cannot grow keeps its table too.
  const std::vector<int32_t> long_tokens = Range(500, 44);  // 11 blocks: 6 more
  EXPECT_EQ(m.Allocate(SeqId(1), long_tokens, 44).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Table(m, SeqId(1)), Ids({4, 5, 6, 7, 8}));
  EXPECT_EQ(m.NumFreeBlocks(), 5);

  // 20 tokens = 5 blocks: 3 cached + 2 new fit exactly.
  const std::vector<int32_t> fits = Concat(common, Range(60, 8));
  CachedPrefix q = m.FindCachedPrefix(fits);
  ASSERT_TRUE(m.Allocate(SeqId(3), fits, 8, q).ok());
  EXPECT_EQ(Table(m, SeqId(3)), Ids({0, 1, 2, 9, 3}));
  EXPECT_EQ(m.NumFreeBlocks(), 0);
  ASSERT_INVARIANTS(m);

  ASSERT_TRUE(m.Free(SeqId(1)).ok());
  ASSERT_TRUE(m.Free(SeqId(3)).ok());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  ASSERT_INVARIANTS(m);
}

TEST(KvCacheManagerTest, StalePrefixIsRejected) {
  KvCacheManager m(SmallOptions());
  const std::vector<int32_t> prompt = Range(0, 9);
  Prefill(m, SeqId(0), prompt);  // blocks 0, 1 cached; 2 partial
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  CachedPrefix p = m.FindCachedPrefix(prompt);
  EXPECT_EQ(p.blocks, Ids({0, 1}));
  // Another sequence takes every free block, evicting 1 and 0.
  ASSERT_TRUE(m.Allocate(SeqId(1), Range(100, 40), 40).ok());
  ASSERT_TRUE(m.Free(SeqId(1)).ok());
  const absl::Status s = m.Allocate(SeqId(2), prompt, 1, p);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_FALSE(m.Contains(SeqId(2)));
  EXPECT_TRUE(m.FindCachedPrefix(prompt).blocks.empty());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  ASSERT_INVARIANTS(m);
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

uint64_t ConstantHash(uint64_t, std::span<const int32_t>, uint64_t) { return 7; }

TEST(KvCacheManagerTest, ForcedHashCollisionsNeverShareWrongBlocks) {
  KvCacheManagerOptions options = SmallOptions();
  options.hash_fn = &ConstantHash;  // every block hashes to 7
  KvCacheManager m(options);
  const std::vector<int32_t> a = Range(0, 9);
  Prefill(m, SeqId(0), a);
  // Block 0 took hash 7; block 1 collides with it and stays uncached.
  EXPECT_EQ(m.pool().cached_hash(BlockId(0)), 7u);
  EXPECT_EQ(m.pool().cached_hash(BlockId(1)), std::nullopt);
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  // Different tokens under the same hash: a miss.
  EXPECT_TRUE(m.FindCachedPrefix(Range(100, 9)).blocks.empty());
  // Block 1 of `a` has the right tokens but a different parent than block 0.
  const std::vector<int32_t> shifted = Concat(Range(0, 4), Range(0, 5));
  EXPECT_EQ(m.FindCachedPrefix(shifted).blocks, Ids({0}));
  // The genuine prefix still hits its first block.
  EXPECT_EQ(m.FindCachedPrefix(a).blocks, Ids({0}));
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  ASSERT_INVARIANTS(m);
}

// Ignores each block's first token, so {9, 1, 2, 3} collides with {0, 1, 2, 3}.
uint64_t FirstTokenBlindHash(uint64_t parent, std::span<const int32_t> tokens, uint64_t salt) {
  return HashBlockTokens(parent, tokens.subspan(1), salt);
}

// The chain attack that verifying only the parent *hash* would let through: a
// duplicate's child outlives the canonical parent, a colliding block takes the
// parent's hash, and [colliding block, child's tokens] must still miss.
TEST(KvCacheManagerTest, ChainCollisionAfterParentEvictionMisses) {
  KvCacheManagerOptions options = SmallOptions();
  options.hash_fn = &FirstTokenBlindHash;
  KvCacheManager m(options);
  const std::vector<int32_t> x = {0, 1, 2, 3};
  const std::vector<int32_t> y = {9, 1, 2, 3};  // same hash as x
  const std::vector<int32_t> z = {4, 5, 6, 7};
  const std::vector<int32_t> p_tokens = Concat(x, {50});
  const std::vector<int32_t> q_tokens = Concat(Concat(x, z), {60});
  // Admitted together: Q computes its own copy of x.
  ASSERT_TRUE(m.Allocate(SeqId(0), p_tokens, 5, m.FindCachedPrefix(p_tokens)).ok());
  ASSERT_TRUE(m.Allocate(SeqId(1), q_tokens, 9, m.FindCachedPrefix(q_tokens)).ok());
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1}));
  EXPECT_EQ(Table(m, SeqId(1)), Ids({2, 3, 4}));
  ASSERT_TRUE(m.CommitComputed(SeqId(0), p_tokens, 5).ok());
  ASSERT_TRUE(m.CommitComputed(SeqId(1), q_tokens, 9).ok());
  EXPECT_TRUE(m.pool().cached_hash(BlockId(0)).has_value());   // x, canonical
  EXPECT_FALSE(m.pool().cached_hash(BlockId(2)).has_value());  // Q's duplicate x
  EXPECT_TRUE(m.pool().cached_hash(BlockId(3)).has_value());   // z after x
  // The honest lookup shares P's x and Q's z.
  EXPECT_EQ(m.FindCachedPrefix(Concat(Concat(x, z), {70})).blocks, Ids({0, 3}));

  // P finishes and its blocks are evicted; Q (and its z block) lives on.
  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  ASSERT_TRUE(m.Allocate(SeqId(3), Range(100, 28), 28).ok());
  EXPECT_EQ(Table(m, SeqId(3)), Ids({5, 6, 7, 8, 9, 1, 0}));
  ASSERT_TRUE(m.Free(SeqId(3)).ok());
  EXPECT_EQ(m.pool().cached_hash(BlockId(0)), std::nullopt);

  // An attacker caches y under x's hash, then asks for [y, z].
  const std::vector<int32_t> r_tokens = Concat(y, {80});
  Prefill(m, SeqId(4), r_tokens);
  const BlockId y_block = Table(m, SeqId(4))[0];
  EXPECT_EQ(y_block, BlockId(0));  // the very block id that held x before
  const std::vector<int32_t> attack = Concat(Concat(y, z), {90});
  const CachedPrefix hit = m.FindCachedPrefix(attack);
  EXPECT_EQ(hit.blocks, std::vector<BlockId>{y_block});  // y only: Q's z was computed after x
  // Computing [y, z] itself replaces Q's unreachable z entry.
  ASSERT_TRUE(m.Allocate(SeqId(5), attack, 5, hit).ok());
  ASSERT_TRUE(m.CommitComputed(SeqId(5), attack, 9).ok());
  EXPECT_EQ(m.pool().cached_hash(BlockId(3)), std::nullopt);
  const BlockId z_after_y = Table(m, SeqId(5))[1];
  EXPECT_TRUE(m.pool().cached_hash(z_after_y).has_value());
  EXPECT_EQ(m.FindCachedPrefix(Concat(Concat(y, z), {91})).blocks,
            Ids({y_block.value(), z_after_y.value()}));
  ASSERT_INVARIANTS(m);
  for (int64_t s : {1, 4, 5}) ASSERT_TRUE(m.Free(SeqId(s)).ok());
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  ASSERT_INVARIANTS(m);
}

TEST(KvCacheManagerTest, RejectsBadArguments) {
  KvCacheManager m(SmallOptions());
  const std::vector<int32_t> prompt = Range(0, 9);
  EXPECT_EQ(m.Allocate(SeqId(0), prompt, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Allocate(SeqId(0), prompt, 10).code(), absl::StatusCode::kInvalidArgument);
  CachedPrefix bogus;
  bogus.blocks = Ids({0});
  bogus.num_cached_tokens = 3;  // not a whole block
  EXPECT_EQ(m.Allocate(SeqId(0), prompt, 1, bogus).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(m.Contains(SeqId(0)));

  ASSERT_TRUE(m.Allocate(SeqId(0), prompt, 5).ok());
  EXPECT_EQ(Table(m, SeqId(0)), Ids({0, 1}));
  CachedPrefix empty_prefix;
  empty_prefix.num_cached_tokens = 4;
  EXPECT_EQ(m.Allocate(SeqId(0), prompt, 1, empty_prefix).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.CommitComputed(SeqId(0), prompt, 9).code(),
            absl::StatusCode::kInvalidArgument);  // only 8 slots
  ASSERT_TRUE(m.CommitComputed(SeqId(0), prompt, 5).ok());
  EXPECT_EQ(m.CommitComputed(SeqId(0), prompt, 4).code(),
            absl::StatusCode::kInvalidArgument);  // goes backwards
  EXPECT_EQ(m.CommitComputed(SeqId(0), Range(0, 3), 5).code(),
            absl::StatusCode::kInvalidArgument);  // beyond the tokens
  EXPECT_EQ(m.CommitComputed(SeqId(9), prompt, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.Free(SeqId(9)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.NumComputedTokens(SeqId(0)), 5);
  ASSERT_INVARIANTS(m);

  ASSERT_TRUE(m.Free(SeqId(0)).ok());
  EXPECT_EQ(m.Free(SeqId(0)).code(), absl::StatusCode::kNotFound);  // double free is a no-op
  EXPECT_EQ(m.NumFreeBlocks(), kNumBlocks);
  ASSERT_INVARIANTS(m);
}

TEST(KvCacheManagerTest, OptionsValidate) {
  EXPECT_TRUE(SmallOptions().Validate().ok());
  KvCacheManagerOptions o = SmallOptions();
  o.block_size = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = SmallOptions();
  o.num_blocks = -1;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = SmallOptions();
  o.hash_fn = nullptr;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
}

// A weak hash (4 distinct values) so the randomized test collides constantly.
uint64_t WeakHash(uint64_t parent, std::span<const int32_t> tokens, uint64_t salt) {
  return (parent + (tokens.empty() ? 0 : tokens[0]) + salt) & 3;
}

// Thousands of random admit / chunk / decode / free operations over sequences
// that share a few prompt prefixes. After each op: CheckInvariants. A shadow
// copy of what each slot "holds" checks that every reused prefix block holds
// exactly the tokens of the sequence reusing it (no wrong KV, ever).
class KvCacheManagerRandomTest : public ::testing::TestWithParam<bool> {};

TEST_P(KvCacheManagerRandomTest, RandomOpsKeepInvariants) {
  const bool weak_hash = GetParam();
  KvCacheManagerOptions options;
  options.num_blocks = 24;
  options.block_size = 4;
  if (weak_hash) options.hash_fn = &WeakHash;
  KvCacheManager m(options);
  std::mt19937 rng(weak_hash ? 1234 : 42);
  auto rand = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 4; ++i) prefixes.push_back(Range(100 * i, rand(3, 14)));
  struct Live {
    std::vector<int32_t> tokens;  // prompt + generated so far
    int64_t prompt_len = 0;
  };
  absl::flat_hash_map<SeqId, Live> live;
  // shadow[slot] = the token whose KV the slot holds, or -1.
  std::vector<int32_t> shadow(static_cast<size_t>(options.num_blocks * options.block_size), -1);
  int64_t next_seq = 0;
  int64_t num_hit_blocks = 0;
  int64_t num_exhausted = 0;

  auto commit = [&](SeqId seq, int64_t upto) {
    Live& l = live[seq];
    const std::span<const BlockId> table = m.BlockTable(seq);
    for (int64_t pos = m.NumComputedTokens(seq); pos < upto; ++pos) {
      const int64_t slot = table[pos / 4].value() * 4 + pos % 4;
      shadow[static_cast<size_t>(slot)] = l.tokens[static_cast<size_t>(pos)];
    }
    ASSERT_TRUE(m.CommitComputed(seq, l.tokens, upto).ok());
  };

  for (int op = 0; op < 20000; ++op) {
    const int kind = rand(0, 9);
    if (kind <= 2 || live.empty()) {  // admit a new sequence
      Live l;
      l.tokens = prefixes[static_cast<size_t>(rand(0, 3))];
      l.tokens.resize(static_cast<size_t>(rand(1, static_cast<int>(l.tokens.size()))));
      const std::vector<int32_t> tail = Range(10000 + rand(0, 3) * 10, rand(0, 10));
      l.tokens = Concat(l.tokens, tail);
      if (l.tokens.empty()) l.tokens.push_back(1);
      l.prompt_len = static_cast<int64_t>(l.tokens.size());
      const uint64_t salt = static_cast<uint64_t>(rand(0, 1));
      const CachedPrefix p = m.FindCachedPrefix(l.tokens, salt);
      ASSERT_LT(p.num_cached_tokens, l.prompt_len);
      // Every reused slot must hold this sequence's own tokens.
      for (int64_t pos = 0; pos < p.num_cached_tokens; ++pos) {
        const int64_t slot = p.blocks[pos / 4].value() * 4 + pos % 4;
        ASSERT_EQ(shadow[static_cast<size_t>(slot)], l.tokens[static_cast<size_t>(pos)]);
      }
      const int64_t chunk = rand(1, static_cast<int>(l.prompt_len - p.num_cached_tokens));
      const SeqId seq(next_seq++);
      const absl::Status s = m.Allocate(seq, l.tokens, chunk, p);
      if (s.ok()) {
        num_hit_blocks += static_cast<int64_t>(p.blocks.size());
        live[seq] = std::move(l);
        commit(seq, p.num_cached_tokens + chunk);
      } else {
        ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
        ASSERT_FALSE(m.Contains(seq));
        ++num_exhausted;
      }
    } else if (kind <= 7) {  // one step of a live sequence: chunk or decode
      auto it = live.begin();
      std::advance(it, rand(0, static_cast<int>(live.size()) - 1));
      const SeqId seq = it->first;
      Live& l = it->second;
      const int64_t computed = m.NumComputedTokens(seq);
      int64_t num_new;
      if (computed < l.prompt_len) {
        num_new = rand(1, static_cast<int>(l.prompt_len - computed));
      } else {
        l.tokens.push_back(rand(0, 3));  // "sampled" token, KV not yet computed
        num_new = 1;
      }
      const std::vector<BlockId> before(m.BlockTable(seq).begin(), m.BlockTable(seq).end());
      const absl::Status s = m.Allocate(seq, l.tokens, num_new);
      if (s.ok()) {
        commit(seq, computed + num_new);
      } else {
        ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
        ASSERT_EQ(std::vector<BlockId>(m.BlockTable(seq).begin(), m.BlockTable(seq).end()), before);
        ++num_exhausted;
        if (computed >= l.prompt_len) l.tokens.pop_back();
        // Preempt it (recompute later), as the scheduler would.
        ASSERT_TRUE(m.Free(seq).ok());
        live.erase(it);
      }
    } else {  // finish a sequence
      auto it = live.begin();
      std::advance(it, rand(0, static_cast<int>(live.size()) - 1));
      ASSERT_TRUE(m.Free(it->first).ok());
      live.erase(it);
    }
    const absl::Status inv = m.CheckInvariants();
    ASSERT_TRUE(inv.ok()) << "after op " << op << ": " << inv;
    const KvCacheStats stats = m.Stats();
    ASSERT_EQ(stats.num_used_blocks + stats.num_free_blocks, options.num_blocks);
  }
  // The test did exercise sharing and running out of blocks.
  RecordProperty("hit_blocks", static_cast<int>(num_hit_blocks));
  RecordProperty("exhausted", static_cast<int>(num_exhausted));
  RecordProperty("cached_tokens", static_cast<int>(m.Stats().prefix_hits_tokens));
  EXPECT_GT(num_hit_blocks, weak_hash ? 20 : 100);
  EXPECT_GT(num_exhausted, 10);
  for (const auto& [seq, l] : live) ASSERT_TRUE(m.Free(seq).ok());
  EXPECT_EQ(m.NumFreeBlocks(), options.num_blocks);
  EXPECT_EQ(m.NumSequences(), 0);
  ASSERT_INVARIANTS(m);
}

INSTANTIATE_TEST_SUITE_P(Hashes, KvCacheManagerRandomTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "WeakHash" : "XxHash";
                         });

}  // namespace
}  // namespace tandem
