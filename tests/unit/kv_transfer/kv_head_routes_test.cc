// RouteKvHeads (which source rank sends which heads to which destination
// rank) and PutLayerHeads (the puts for one route): exact routes for every
// fan-in / fan-out shape, and whole prompt transfers between TP groups of
// sizes {1, 2, 4} x {1, 2, 4} over loopback transports, checked byte for byte.
#include "kv_transfer/kv_head_routes.h"

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/model/tp_shard.h"
#include "gtest/gtest.h"
#include "kv_transfer/block_layout.h"
#include "kv_transfer/loopback/loopback_transport.h"

namespace tandem {
namespace {

std::vector<KvRankHeads> Group(int64_t kv_heads, int size) {
  std::vector<KvRankHeads> g;
  for (int r = 0; r < size; ++r) {
    const ShardRange s = KvHeadShard(kv_heads, {r, size});
    g.push_back({s.begin, s.length});
  }
  return g;
}

std::vector<KvHeadRoute> Routes(int64_t kv_heads, int a, int b) {
  auto r = RouteKvHeads(Group(kv_heads, a), Group(kv_heads, b), kv_heads);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::vector<KvHeadRoute>{};
}

TEST(RouteKvHeadsTest, EqualGroupsSendWholeRegionsRankToRank) {
  EXPECT_EQ(Routes(4, 1, 1), (std::vector<KvHeadRoute>{{0, 0, 0, 0, 4}}));
  EXPECT_EQ(Routes(4, 2, 2), (std::vector<KvHeadRoute>{{0, 0, 0, 0, 2}, {1, 1, 0, 0, 2}}));
}

TEST(RouteKvHeadsTest, FanOutSplitsOneSourceOverDestinations) {
  EXPECT_EQ(Routes(4, 1, 2), (std::vector<KvHeadRoute>{{0, 0, 0, 0, 2}, {0, 1, 2, 0, 2}}));
  EXPECT_EQ(Routes(8, 2, 4),
            (std::vector<KvHeadRoute>{{0, 0, 0, 0, 2}, {0, 1, 2, 0, 2}, {1, 2, 0, 0, 2}, {1, 3, 2, 0, 2}}));
}

TEST(RouteKvHeadsTest, FanInGathersSourcesIntoOneDestination) {
  EXPECT_EQ(Routes(4, 2, 1), (std::vector<KvHeadRoute>{{0, 0, 0, 0, 2}, {1, 0, 0, 2, 2}}));
  EXPECT_EQ(Routes(4, 4, 1),
            (std::vector<KvHeadRoute>{{0, 0, 0, 0, 1}, {1, 0, 0, 1, 1}, {2, 0, 0, 2, 1}, {3, 0, 0, 3, 1}}));
}

TEST(RouteKvHeadsTest, ReplicatedDestinationHeadsEachGetTheirCopy) {
  // 2 KV heads over 4 decode ranks: ranks 0,1 hold head 0; ranks 2,3 head 1.
  EXPECT_EQ(Routes(2, 2, 4),
            (std::vector<KvHeadRoute>{{0, 0, 0, 0, 1}, {0, 1, 0, 0, 1}, {1, 2, 0, 0, 1}, {1, 3, 0, 0, 1}}));
  EXPECT_EQ(Routes(2, 1, 4),
            (std::vector<KvHeadRoute>{{0, 0, 0, 0, 1}, {0, 1, 0, 0, 1}, {0, 2, 1, 0, 1}, {0, 3, 1, 0, 1}}));
}

TEST(RouteKvHeadsTest, ReplicatedSourceHeadsAreReadOnceAndSpreadOverReplicas) {
  // 2 KV heads over 4 prefill ranks: head 0 on ranks 0,1; head 1 on 2,3.
  EXPECT_EQ(Routes(2, 4, 1), (std::vector<KvHeadRoute>{{0, 0, 0, 0, 1}, {2, 0, 0, 1, 1}}));
  // Destination rank 1 (head 1) reads the second replica.
  EXPECT_EQ(Routes(2, 4, 2), (std::vector<KvHeadRoute>{{0, 0, 0, 0, 1}, {3, 1, 0, 0, 1}}));
  // Equal replicated groups stay rank to rank.
  EXPECT_EQ(Routes(2, 4, 4),
            (std::vector<KvHeadRoute>{{0, 0, 0, 0, 1}, {1, 1, 0, 0, 1}, {2, 2, 0, 0, 1}, {3, 3, 0, 0, 1}}));
}

TEST(RouteKvHeadsTest, ImpossibleGroupsAreInvalidArgument) {
  const std::vector<KvRankHeads> half = {{0, 2}};
  const std::vector<KvRankHeads> all = {{0, 4}};
  EXPECT_EQ(RouteKvHeads(half, all, 4).status().code(), absl::StatusCode::kInvalidArgument);  // heads 2,3 missing
  EXPECT_EQ(RouteKvHeads({}, all, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RouteKvHeads(all, std::vector<KvRankHeads>{{2, 3}}, 4).status().code(),
            absl::StatusCode::kInvalidArgument);  // past the end
  EXPECT_EQ(RouteKvHeads(all, std::vector<KvRankHeads>{{0, 0}}, 4).status().code(),
            absl::StatusCode::kInvalidArgument);  // empty range
  EXPECT_EQ(RouteKvHeads(all, all, 0).status().code(), absl::StatusCode::kInvalidArgument);
  auto missing = RouteKvHeads(half, all, 4);
  EXPECT_NE(missing.status().message().find("KV head 2"), std::string_view::npos) << missing.status();
}

// One TP group's KV pools: rank r holds Group(kv_heads, size)[r] heads.
struct RankPools {
  std::vector<KvRegionLayout> layouts;
  std::vector<std::vector<uint8_t>> memory;
  std::vector<std::unique_ptr<LoopbackTransport>> transports;
  std::vector<MemoryDescriptor> descriptors;
};

constexpr int64_t kLayers = 3;
constexpr int64_t kHeadBytes = 24;  // e.g. 3 slots x 4 dims x f16

// The byte a prompt's block `i` holds at (layer, kv, model head, byte).
uint8_t Expected(int64_t layer, size_t i, int kv, int64_t head, int64_t byte) {
  return static_cast<uint8_t>(1 + layer * 37 + i * 11 + kv * 101 + head * 53 + byte * 3);
}

RankPools MakeGroup(const std::shared_ptr<LoopbackFabric>& fabric, int64_t kv_heads, int size, int64_t blocks) {
  RankPools p;
  for (const KvRankHeads& g : Group(kv_heads, size)) {
    const KvRegionLayout l{kLayers, blocks, 2 * g.num_heads * kHeadBytes, g.num_heads};
    p.layouts.push_back(l);
    p.memory.emplace_back(l.total_bytes(), 0);
    p.transports.push_back(std::make_unique<LoopbackTransport>(fabric));
    auto d = p.transports.back()->RegisterMemory(p.memory.back().data(), p.memory.back().size());
    EXPECT_TRUE(d.ok());
    p.descriptors.push_back(*d);
  }
  return p;
}

void TransferBetweenGroups(int64_t kv_heads, int a, int b) {
  SCOPED_TRACE(testing::Message() << kv_heads << " KV heads, TP " << a << " -> TP " << b);
  auto fabric = std::make_shared<LoopbackFabric>();
  RankPools src = MakeGroup(fabric, kv_heads, a, 6);
  RankPools dst = MakeGroup(fabric, kv_heads, b, 9);
  const std::vector<BlockId> src_blocks = {BlockId(4), BlockId(1), BlockId(2)};
  const std::vector<BlockId> dst_blocks = {BlockId(0), BlockId(7), BlockId(8)};
  const std::vector<KvRankHeads> src_heads = Group(kv_heads, a);
  const std::vector<KvRankHeads> dst_heads = Group(kv_heads, b);
  // Fill every source rank's prompt blocks with the pattern of its heads.
  for (int r = 0; r < a; ++r) {
    const KvRegionLayout& l = src.layouts[r];
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      for (size_t i = 0; i < src_blocks.size(); ++i) {
        for (int kv = 0; kv < 2; ++kv) {
          for (int64_t h = 0; h < l.num_kv_heads; ++h) {
            const uint64_t off = l.SpanOffset(layer, src_blocks[i]) + (kv * l.num_kv_heads + h) * kHeadBytes;
            for (int64_t x = 0; x < kHeadBytes; ++x) {
              src.memory[r][off + x] = Expected(layer, i, kv, src_heads[r].head_begin + h, x);
            }
          }
        }
      }
    }
  }
  auto routes = RouteKvHeads(src_heads, dst_heads, kv_heads);
  ASSERT_TRUE(routes.ok()) << routes.status();
  int total_puts = 0, expected_puts = 0;
  for (const KvHeadRoute& route : *routes) {
    // A route that is both ranks' whole span moves whole spans, and blocks
    // 1,2 -> 7,8 are one run: 2 puts a layer. A head slice takes a K put and
    // a V put per block: 6 a layer.
    const bool whole = route.num_heads == src_heads[route.src_rank].num_heads &&
                       route.num_heads == dst_heads[route.dst_rank].num_heads;
    expected_puts += (whole ? 2 : 6) * kLayers;
    auto session = src.transports[route.src_rank]->Connect(dst.descriptors[route.dst_rank]);
    ASSERT_TRUE(session.ok()) << session.status();
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      auto puts = PutLayerHeads(**session, src.layouts[route.src_rank], dst.layouts[route.dst_rank], layer,
                                src_blocks, dst_blocks, route.src_head_offset, route.dst_head_offset,
                                route.num_heads);
      ASSERT_TRUE(puts.ok()) << puts.status();
      total_puts += *puts;
    }
    ASSERT_TRUE((*session)->Flush(absl::Seconds(1)).ok());
  }
  EXPECT_EQ(total_puts, expected_puts);
  if (a == b) EXPECT_EQ(total_puts, 2 * kLayers * b);  // equal layouts: whole spans only
  // Every destination rank holds exactly its heads of every prompt block,
  // and nothing else was written.
  for (int r = 0; r < b; ++r) {
    const KvRegionLayout& l = dst.layouts[r];
    std::vector<uint8_t> want(l.total_bytes(), 0);
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      for (size_t i = 0; i < dst_blocks.size(); ++i) {
        for (int kv = 0; kv < 2; ++kv) {
          for (int64_t h = 0; h < l.num_kv_heads; ++h) {
            const uint64_t off = l.SpanOffset(layer, dst_blocks[i]) + (kv * l.num_kv_heads + h) * kHeadBytes;
            for (int64_t x = 0; x < kHeadBytes; ++x) want[off + x] = Expected(layer, i, kv, dst_heads[r].head_begin + h, x);
          }
        }
      }
    }
    EXPECT_EQ(dst.memory[r], want) << "destination rank " << r;
  }
}

TEST(TpLayoutTransferTest, EveryGroupSizePairMovesEveryHeadToItsRank) {
  for (int64_t kv_heads : {2, 4}) {
    for (int a : {1, 2, 4}) {
      for (int b : {1, 2, 4}) TransferBetweenGroups(kv_heads, a, b);
    }
  }
}

TEST(PutLayerHeadsTest, RejectsMismatchedHeadsAndRangesBeforeSending) {
  auto fabric = std::make_shared<LoopbackFabric>();
  RankPools src = MakeGroup(fabric, 4, 1, 4);
  RankPools dst = MakeGroup(fabric, 4, 2, 4);
  auto session = src.transports[0]->Connect(dst.descriptors[0]);
  ASSERT_TRUE(session.ok());
  const std::vector<BlockId> one = {BlockId(0)};
  auto code = [&](const KvRegionLayout& local, const KvRegionLayout& remote, int64_t sh, int64_t dh, int64_t n,
                  std::vector<BlockId> blocks) {
    return PutLayerHeads(**session, local, remote, 0, blocks, blocks, sh, dh, n).status().code();
  };
  const KvRegionLayout& l = src.layouts[0];
  const KvRegionLayout& r = dst.layouts[0];
  EXPECT_EQ(code(l, r, 3, 0, 2, one), absl::StatusCode::kInvalidArgument);  // past the source heads
  EXPECT_EQ(code(l, r, 0, 1, 2, one), absl::StatusCode::kInvalidArgument);  // past the destination heads
  EXPECT_EQ(code(l, r, 0, 0, 0, one), absl::StatusCode::kInvalidArgument);  // empty slice
  EXPECT_EQ(code(l, r, 0, 0, 2, {BlockId(4)}), absl::StatusCode::kInvalidArgument);  // block out of range
  KvRegionLayout wider = r;
  wider.block_span_bytes = 2 * r.num_kv_heads * (kHeadBytes + 2);  // another dtype or block size
  EXPECT_EQ(code(l, wider, 0, 0, 2, one), absl::StatusCode::kInvalidArgument);
  KvRegionLayout odd = r;
  odd.block_span_bytes += 1;  // does not split into equal head pieces
  EXPECT_EQ(code(l, odd, 0, 0, 2, one), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*session)->bytes_put(), 0u);
}

}  // namespace
}  // namespace tandem
