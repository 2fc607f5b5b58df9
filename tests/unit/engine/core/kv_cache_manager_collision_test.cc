// KvCacheManager under hash collisions: forced and chained collisions never
// share the wrong blocks, and a randomized test (thousands of admit / chunk /
// decode / free operations, with a strong and a deliberately weak hash) keeps
// the invariants and never serves wrong KV.
// Helpers (Ids, Range, Prefill, SmallOptions, ...): kv_cache_manager_test_util.h.

#include <cstdint>
#include <iterator>
#include <random>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/core/kv_cache_manager.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/kv_cache_manager_test_util.h"

namespace tandem {
namespace {

using namespace kv_cache_manager_test;  // NOLINT(build/namespaces): the shared helpers

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
