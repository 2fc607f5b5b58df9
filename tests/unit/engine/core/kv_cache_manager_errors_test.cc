// KvCacheManager failure paths: running out of blocks leaves no trace, a
// stale (evicted) prefix is rejected, bad arguments get exact status codes,
// and KvCacheManagerOptions::Validate.
// Helpers (Ids, Range, Prefill, SmallOptions, ...): kv_cache_manager_test_util.h.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/kv_cache_manager.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/kv_cache_manager_test_util.h"

namespace tandem {
namespace {

using namespace kv_cache_manager_test;  // NOLINT(build/namespaces): the shared helpers

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

}  // namespace
}  // namespace tandem
