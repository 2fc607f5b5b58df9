// Cache-aware routing's pieces with scripted numbers: the PrefixIndex
// (overlap of chained hashes, recency bound, evictions, a worker's restart)
// and RoutingPolicy's exact choices in each mode.
#include "router/routing_policy.h"

#include <vector>

#include "engine/core/block_hash.h"
#include "gtest/gtest.h"
#include "router/prefix_index.h"

namespace tandem {
namespace {

std::vector<uint64_t> Hashes(int first_token, int blocks) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < blocks * 16; ++i) tokens.push_back(first_token + i);
  return ChainedBlockHashes(tokens, 16, 0, blocks);
}

TEST(PrefixIndexTest, OverlapIsTheLeadingRunOfHeldBlocks) {
  PrefixIndex index(100);
  const std::vector<uint64_t> prompt = Hashes(1, 6);
  index.Stored("a", std::span(prompt).first(4));
  EXPECT_EQ(index.Overlap("a", prompt), 4);
  EXPECT_EQ(index.Overlap("b", prompt), 0);  // never heard of
  // A held block after a gap does not count: its chain starts at the gap.
  index.Stored("b", std::span(prompt).subspan(1, 3));
  EXPECT_EQ(index.Overlap("b", prompt), 0);
  // Another prompt sharing the first two blocks' tokens shares their hashes only.
  std::vector<int32_t> tokens;
  for (int i = 0; i < 32; ++i) tokens.push_back(1 + i);
  for (int i = 0; i < 32; ++i) tokens.push_back(9000 + i);
  const std::vector<uint64_t> other = ChainedBlockHashes(tokens, 16, 0, 4);
  EXPECT_EQ(index.Overlap("a", other), 2);
  index.Evicted("a", std::span(prompt).subspan(1, 1));
  EXPECT_EQ(index.Overlap("a", prompt), 1);
  EXPECT_EQ(index.NumBlocks("a"), 3);
  index.DropWorker("a");  // restarted: its entries are gone
  EXPECT_EQ(index.Overlap("a", prompt), 0);
  EXPECT_EQ(index.NumBlocks("a"), 0);
}

TEST(PrefixIndexTest, EachWorkerKeepsItsMostRecentBlocks) {
  PrefixIndex index(4);
  const std::vector<uint64_t> p = Hashes(1, 4), q = Hashes(500, 2);
  index.Stored("a", p);
  index.Stored("a", std::span(p).first(1));  // block 0 is the most recent again
  index.Stored("a", q);                      // two new: blocks 1 and 2 of p go
  EXPECT_EQ(index.NumBlocks("a"), 4);
  EXPECT_EQ(index.Overlap("a", q), 2);
  EXPECT_EQ(index.Overlap("a", p), 1);
  index.Evicted("nobody", p);  // unknown worker: nothing happens
  EXPECT_EQ(index.NumBlocks("a"), 4);
}

TEST(RoutingPolicyTest, ParsesItsNames) {
  EXPECT_EQ(*ParseRoutingMode("kv-aware"), RoutingMode::kKvAware);
  EXPECT_EQ(*ParseRoutingMode("least-loaded"), RoutingMode::kLeastLoaded);
  EXPECT_EQ(*ParseRoutingMode("round-robin"), RoutingMode::kRoundRobin);
  EXPECT_EQ(ParseRoutingMode("random").status().message(),
            "--routing: 'random' is not one of kv-aware, least-loaded, round-robin");
  EXPECT_EQ(RoutingModeName(RoutingMode::kKvAware), "kv-aware");
}

TEST(RoutingPolicyTest, ExactChoices) {
  // prompt of 24 blocks; worker 0 idle and cold, 1 holds 20 blocks with 10
  // in flight, 2 holds 24 with 30 in flight.
  const std::vector<RoutingCandidate> c = {{0, 0, 0}, {2, 10, 20}, {3, 30, 24}};
  RoutingPolicy kv(RoutingMode::kKvAware);
  EXPECT_DOUBLE_EQ(kv.Cost(c[0], 24), 24.0);
  EXPECT_DOUBLE_EQ(kv.Cost(c[1], 24), 14.0);
  EXPECT_DOUBLE_EQ(kv.Cost(c[2], 24), 30.0);
  EXPECT_EQ(kv.Choose(c, 24), 1);
  // Weighing cache hits 3x: 72, 22, 30 -> still 1; at 0.25 load wins: 6, 11, 30 -> 0.
  EXPECT_EQ(RoutingPolicy(RoutingMode::kKvAware, 3.0).Choose(c, 24), 1);
  EXPECT_EQ(RoutingPolicy(RoutingMode::kKvAware, 0.25).Choose(c, 24), 0);
  // Ties go to the earlier candidate; cached beyond the prompt costs nothing extra.
  EXPECT_EQ(kv.Choose({{0, 5, 24}, {0, 5, 30}}, 24), 0);
  EXPECT_DOUBLE_EQ(kv.Cost({0, 5, 30}, 24), 5.0);
  RoutingPolicy least(RoutingMode::kLeastLoaded);
  EXPECT_EQ(least.Choose(c, 24), 0);
  EXPECT_EQ(least.Choose({{4, 0, 0}, {1, 0, 0}, {1, 0, 0}}, 1), 1);
  RoutingPolicy rr(RoutingMode::kRoundRobin);
  std::vector<int> picks;
  for (int i = 0; i < 7; ++i) picks.push_back(rr.Choose(c, 24));
  EXPECT_EQ(picks, (std::vector<int>{0, 1, 2, 0, 1, 2, 0}));
  EXPECT_EQ(kv.Choose({}, 24), -1);
}

}  // namespace
}  // namespace tandem
