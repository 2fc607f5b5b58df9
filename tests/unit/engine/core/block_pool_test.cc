// Tests for BlockPool: exact block ids, ref counts, free-queue (LRU) order,
// eviction of cached keys, and collision-safe lookup.

#include "engine/core/block_pool.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

std::vector<BlockId> Ids(std::initializer_list<int32_t> ids) {
  std::vector<BlockId> out;
  for (int32_t id : ids) out.emplace_back(id);
  return out;
}

#define EXPECT_INVARIANTS(pool) \
  EXPECT_TRUE((pool).CheckInvariants().ok()) << (pool).CheckInvariants()

TEST(BlockPoolTest, AllocatesInIdOrderAndFreesToTheBack) {
  BlockPool pool(10);
  EXPECT_EQ(pool.num_free_blocks(), 10);
  auto a = pool.Allocate(3);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, Ids({0, 1, 2}));
  auto b = pool.Allocate(2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, Ids({3, 4}));
  EXPECT_EQ(pool.num_used_blocks(), 5);
  EXPECT_EQ(pool.ref_count(BlockId(0)), 1);
  EXPECT_INVARIANTS(pool);

  pool.Free(Ids({2, 1, 0}));
  EXPECT_EQ(pool.FreeQueue(), Ids({5, 6, 7, 8, 9, 2, 1, 0}));
  auto c = pool.Allocate(6);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, Ids({5, 6, 7, 8, 9, 2}));
  EXPECT_INVARIANTS(pool);

  pool.Free(*b);
  pool.Free(*c);
  EXPECT_EQ(pool.num_free_blocks(), 10);
  EXPECT_EQ(pool.FreeQueue(), Ids({1, 0, 3, 4, 5, 6, 7, 8, 9, 2}));
  EXPECT_INVARIANTS(pool);
}

TEST(BlockPoolTest, AllocateIsAllOrNothing) {
  BlockPool pool(4);
  auto a = pool.Allocate(3);
  ASSERT_TRUE(a.ok());
  const std::vector<BlockId> before = pool.FreeQueue();
  auto b = pool.Allocate(2);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.FreeQueue(), before);
  EXPECT_EQ(pool.num_free_blocks(), 1);
  EXPECT_EQ(pool.Allocate(-1).status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = pool.Allocate(0);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  pool.Free(*a);
  EXPECT_EQ(pool.num_free_blocks(), 4);
  EXPECT_INVARIANTS(pool);
}

TEST(BlockPoolTest, CachedBlockStaysFindableUntilEvicted) {
  BlockPool pool(3);
  auto a = pool.Allocate(2);
  ASSERT_TRUE(a.ok());
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  const CachedBlockKey key{/*hash=*/111, kRootBlockRef, /*cache_salt=*/0, tokens};
  EXPECT_TRUE(pool.CacheFullBlock(BlockId(0), key));
  EXPECT_TRUE(pool.CacheFullBlock(BlockId(0), key));  // idempotent
  EXPECT_EQ(pool.num_cached_blocks(), 1);
  EXPECT_EQ(pool.Lookup(key), BlockId(0));

  pool.Free(Ids({1, 0}));
  EXPECT_EQ(pool.FreeQueue(), Ids({2, 1, 0}));
  EXPECT_EQ(pool.Lookup(key), BlockId(0));  // free but still cached
  EXPECT_EQ(pool.cached_hash(BlockId(0)), 111u);

  // A hit takes it out of the free queue from the back.
  pool.Touch(BlockId(0));
  EXPECT_EQ(pool.ref_count(BlockId(0)), 1);
  EXPECT_EQ(pool.FreeQueue(), Ids({2, 1}));
  pool.Touch(BlockId(0));
  EXPECT_EQ(pool.ref_count(BlockId(0)), 2);
  pool.Free(Ids({0}));
  pool.Free(Ids({0}));
  EXPECT_EQ(pool.FreeQueue(), Ids({2, 1, 0}));
  EXPECT_INVARIANTS(pool);

  // Allocating all three evicts block 0 last, and removes its entry.
  auto b = pool.Allocate(3);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, Ids({2, 1, 0}));
  EXPECT_EQ(pool.Lookup(key), std::nullopt);
  EXPECT_EQ(pool.cached_hash(BlockId(0)), std::nullopt);
  EXPECT_EQ(pool.num_cached_blocks(), 0);
  EXPECT_INVARIANTS(pool);
  pool.Free(*b);
  EXPECT_EQ(pool.num_free_blocks(), 3);
}

TEST(BlockPoolTest, DuplicateHashKeepsTheFirstBlock) {
  BlockPool pool(4);
  auto a = pool.Allocate(2);
  ASSERT_TRUE(a.ok());
  const std::vector<int32_t> tokens = {9, 9, 9, 9};
  const CachedBlockKey key{/*hash=*/5, kRootBlockRef, 0, tokens};
  EXPECT_TRUE(pool.CacheFullBlock(BlockId(0), key));
  EXPECT_FALSE(pool.CacheFullBlock(BlockId(1), key));
  EXPECT_EQ(pool.Lookup(key), BlockId(0));
  EXPECT_EQ(pool.cached_hash(BlockId(1)), std::nullopt);
  EXPECT_EQ(pool.num_cached_blocks(), 1);
  pool.Free(Ids({1, 0}));
  EXPECT_EQ(pool.num_free_blocks(), 4);
  EXPECT_INVARIANTS(pool);
}

TEST(BlockPoolTest, LookupVerifiesContentsOnHashCollision) {
  BlockPool pool(2);
  auto a = pool.Allocate(1);
  ASSERT_TRUE(a.ok());
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  const std::vector<int32_t> other = {1, 2, 3, 5};
  ASSERT_TRUE(pool.CacheFullBlock(BlockId(0), {/*hash=*/42, kRootBlockRef, 0, tokens}));
  // Same hash, different tokens / parent / salt / length: a miss, never block 0.
  EXPECT_EQ(pool.Lookup({42, kRootBlockRef, 0, other}), std::nullopt);
  EXPECT_EQ(pool.Lookup({42, CachedBlockRef{BlockId(1), 5}, 0, tokens}), std::nullopt);
  EXPECT_EQ(pool.Lookup({42, kRootBlockRef, /*cache_salt=*/1, tokens}), std::nullopt);
  EXPECT_EQ(pool.Lookup({42, kRootBlockRef, 0, std::span(tokens).first(3)}), std::nullopt);
  EXPECT_EQ(pool.Lookup({42, kRootBlockRef, 0, tokens}), BlockId(0));
  // The pool copied the tokens: the caller's buffer may change.
  std::vector<int32_t> mutable_tokens = {7, 7, 7, 7};
  auto b = pool.Allocate(1);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(pool.CacheFullBlock(BlockId(1), {43, kRootBlockRef, 0, mutable_tokens}));
  mutable_tokens[0] = 8;
  EXPECT_EQ(pool.Lookup({43, kRootBlockRef, 0, std::vector<int32_t>{7, 7, 7, 7}}), BlockId(1));
  pool.Free(Ids({1, 0}));
  EXPECT_EQ(pool.num_free_blocks(), 2);
  EXPECT_INVARIANTS(pool);
}

TEST(BlockPoolTest, RefsAreCurrentUntilEvictionAndStaleEntriesAreReplaced) {
  BlockPool pool(4);
  auto a = pool.Allocate(3);
  ASSERT_TRUE(a.ok());
  const std::vector<int32_t> t0 = {1, 1, 1, 1};
  const std::vector<int32_t> t1 = {2, 2, 2, 2};
  EXPECT_EQ(pool.cached_ref(BlockId(0)), std::nullopt);
  ASSERT_TRUE(pool.CacheFullBlock(BlockId(0), {/*hash=*/10, kRootBlockRef, 0, t0}));
  const CachedBlockRef parent = *pool.cached_ref(BlockId(0));
  EXPECT_EQ(parent.block, BlockId(0));
  EXPECT_TRUE(pool.IsCurrent(parent));
  EXPECT_TRUE(pool.IsCurrent(kRootBlockRef));
  ASSERT_TRUE(pool.CacheFullBlock(BlockId(1), {/*hash=*/11, parent, 0, t1}));
  EXPECT_EQ(pool.Lookup({11, parent, 0, t1}), BlockId(1));

  // Evict block 0 (the parent) while block 1 (the child) stays in use.
  pool.Free(Ids({0}));
  EXPECT_EQ(pool.FreeQueue(), Ids({3, 0}));
  auto b = pool.Allocate(2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, Ids({3, 0}));
  EXPECT_FALSE(pool.IsCurrent(parent));
  // Re-caching block 0 with the same content gives a new epoch: the child's
  // entry still names the old parent, so it can never be hit again...
  ASSERT_TRUE(pool.CacheFullBlock(BlockId(0), {10, kRootBlockRef, 0, t0}));
  const CachedBlockRef new_parent = *pool.cached_ref(BlockId(0));
  EXPECT_NE(new_parent, parent);
  EXPECT_EQ(pool.Lookup({11, new_parent, 0, t1}), std::nullopt);
  // ...and a new block with that hash replaces the stale entry.
  EXPECT_TRUE(pool.CacheFullBlock(BlockId(2), {11, new_parent, 0, t1}));
  EXPECT_EQ(pool.cached_hash(BlockId(1)), std::nullopt);
  EXPECT_EQ(pool.Lookup({11, new_parent, 0, t1}), BlockId(2));
  EXPECT_INVARIANTS(pool);
  pool.Free(Ids({2, 1, 0, 3}));
  EXPECT_EQ(pool.num_free_blocks(), 4);
  EXPECT_INVARIANTS(pool);
}

TEST(BlockPoolTest, EmptyPool) {
  BlockPool pool(0);
  EXPECT_EQ(pool.num_free_blocks(), 0);
  EXPECT_EQ(pool.Allocate(1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(pool.Allocate(0).ok());
  EXPECT_INVARIANTS(pool);
}

TEST(BlockPoolDeathTest, DoubleFreeIsABug) {
  BlockPool pool(2);
  auto a = pool.Allocate(1);
  ASSERT_TRUE(a.ok());
  pool.Free(*a);
  EXPECT_DEATH(pool.Free(*a), "double free");
}

TEST(BlockPoolDeathTest, TouchingAPlainFreeBlockIsABug) {
  BlockPool pool(2);
  EXPECT_DEATH(pool.Touch(BlockId(1)), "no cached key");
}

}  // namespace
}  // namespace tandem
