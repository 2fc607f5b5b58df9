// KvEventLog: the prefix cache's changes as routers read them (numbering,
// runs, catching up in bounded batches, snapshots for a reader that knows
// nothing or fell behind what is kept), and the KvCacheManager recording
// exactly the chained hashes it caches and evicts.
#include "engine/core/kv_event_log.h"

#include <algorithm>
#include <vector>

#include "engine/core/block_hash.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/kv_cache_manager_test_util.h"

namespace tandem {
namespace {

using ChangeRun = KvEventLog::Run;

std::vector<uint64_t> Sorted(std::vector<uint64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(KvEventLogTest, ReadersGetTheChangesAfterTheirLastInRunsOfOneKind) {
  KvEventLog log;
  log.Stored(11);
  log.Stored(12);
  log.Removed(11);
  log.Stored(13);
  EXPECT_EQ(log.last_seq(), 4u);
  EXPECT_EQ(log.num_held(), 2);
  KvEventLog::Batch b = log.Since(1, 100);
  EXPECT_FALSE(b.snapshot);
  EXPECT_EQ(b.first_seq, 2u);
  EXPECT_EQ(b.runs, (std::vector<ChangeRun>{{false, {12}}, {true, {11}}, {false, {13}}}));
  // At most max_changes at a time; the reader goes on from where it got to.
  b = log.Since(1, 2);
  EXPECT_EQ(b.runs, (std::vector<ChangeRun>{{false, {12}}, {true, {11}}}));
  EXPECT_EQ(b.num_changes(), 2);
  b = log.Since(3, 2);
  EXPECT_EQ(b.first_seq, 4u);
  EXPECT_EQ(b.runs, (std::vector<ChangeRun>{{false, {13}}}));
  // Up to date: nothing.
  b = log.Since(4, 100);
  EXPECT_FALSE(b.snapshot);
  EXPECT_TRUE(b.runs.empty());
}

TEST(KvEventLogTest, AReaderThatKnowsNothingOrFellBehindGetsASnapshot) {
  KvEventLog log(/*max_retained=*/3, /*max_snapshot=*/10);
  for (uint64_t h = 1; h <= 5; ++h) log.Stored(h);
  log.Removed(2);  // changes 1..6; 4..6 kept
  for (uint64_t applied : {uint64_t{0}, uint64_t{1}, uint64_t{2}, uint64_t{7}}) {
    SCOPED_TRACE(applied);
    const KvEventLog::Batch b = log.Since(applied, 100);
    EXPECT_TRUE(b.snapshot);
    EXPECT_EQ(b.first_seq, 6u);  // the state after change 6
    ASSERT_EQ(b.runs.size(), 1u);
    EXPECT_FALSE(b.runs[0].removed);
    EXPECT_EQ(Sorted(b.runs[0].hashes), (std::vector<uint64_t>{1, 3, 4, 5}));
  }
  // Change 4 is still kept: deltas.
  const KvEventLog::Batch b = log.Since(3, 100);
  EXPECT_FALSE(b.snapshot);
  EXPECT_EQ(b.runs, (std::vector<ChangeRun>{{false, {4, 5}}, {true, {2}}}));
  // A snapshot is bounded.
  KvEventLog small(100, /*max_snapshot=*/2);
  for (uint64_t h = 1; h <= 5; ++h) small.Stored(h);
  EXPECT_EQ(small.Since(0, 100).runs[0].hashes.size(), 2u);
  // And by what one batch may carry.
  EXPECT_EQ(log.Since(0, 3).runs[0].hashes.size(), 3u);
}

TEST(KvEventLogTest, TheCacheRecordsTheChainedHashesItStoresAndEvicts) {
  using namespace kv_cache_manager_test;
  KvEventLog log;
  KvCacheManagerOptions o = SmallOptions();  // 10 blocks of 4 tokens
  o.event_log = &log;
  KvCacheManager m(o);
  const std::vector<int32_t> a = Range(100, 10);  // 2 full blocks and a partial one
  Prefill(m, SeqId(1), a);
  const std::vector<uint64_t> hashes = ChainedBlockHashes(a, kBlockSize, 0, 2);
  EXPECT_EQ(log.Since(1, 100).runs, (std::vector<ChangeRun>{{false, {hashes[1]}}}));  // after the first
  const KvEventLog::Batch snapshot = log.Since(0, 100);
  EXPECT_EQ(snapshot.first_seq, 2u);
  ASSERT_EQ(snapshot.runs.size(), 1u);
  EXPECT_EQ(Sorted(snapshot.runs[0].hashes), Sorted(hashes));
  ASSERT_TRUE(m.Free(SeqId(1)).ok());
  EXPECT_EQ(log.last_seq(), 2u);  // freed blocks stay cached
  // Filling the pool evicts them: their hashes are removed, in eviction order
  // (the tail of a freed sequence first).
  const std::vector<int32_t> b = Range(500, 40);
  Prefill(m, SeqId(2), b);
  const KvEventLog::Batch after = log.Since(2, 100);
  ASSERT_FALSE(after.runs.empty());
  std::vector<uint64_t> removed;
  for (const ChangeRun& r : after.runs) {
    if (r.removed) removed.insert(removed.end(), r.hashes.begin(), r.hashes.end());
  }
  EXPECT_EQ(removed, (std::vector<uint64_t>{hashes[1], hashes[0]}));
  EXPECT_EQ(log.num_held(), 10);  // b's 10 full blocks
  ASSERT_TRUE(m.Free(SeqId(2)).ok());
}

}  // namespace
}  // namespace tandem
