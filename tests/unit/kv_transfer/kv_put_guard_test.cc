// KvBlockOwners and the loopback transport's guarded puts: a put applies only
// when every block it touches is granted to its token, exactly; layer
// crossings, the pool's slack, token 0, revoked and re-granted blocks are
// refused without touching memory.
#include "kv_transfer/kv_put_guard.h"

#include <cstdint>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_transfer/block_layout.h"
#include "kv_transfer/loopback/loopback_transport.h"
#include "tests/unit/kv_transfer/test_pattern.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

// 3 layers x 8 blocks x 64-byte spans.
const KvRegionLayout kLayout{.num_layers = 3, .num_blocks = 8, .block_span_bytes = 64};

std::vector<BlockId> Blocks(std::initializer_list<int> ids) {
  std::vector<BlockId> out;
  for (int id : ids) out.emplace_back(id);
  return out;
}

// Whether a write of [offset, +length) under `token` was let through (and ran).
bool Writes(const KvBlockOwners& owners, uint64_t token, uint64_t offset, uint64_t length) {
  int ran = 0;
  const bool ok = owners.WriteIfGranted(kLayout, token, offset, length, [&] { ++ran; });
  EXPECT_EQ(ran, ok ? 1 : 0);
  return ok;
}

TEST(KvBlockOwnersTest, AppliesOnlyWhereEveryTouchedBlockIsGrantedToTheToken) {
  KvBlockOwners owners(8);
  owners.Grant(7, Blocks({2, 3, 5}));
  EXPECT_EQ(owners.owner(BlockId(2)), 7u);
  EXPECT_EQ(owners.owner(BlockId(4)), KvBlockOwners::kNoToken);
  const uint64_t layer1 = kLayout.layer_bytes();
  EXPECT_TRUE(Writes(owners, 7, kLayout.SpanOffset(0, BlockId(2)), 128));          // blocks 2..3
  EXPECT_TRUE(Writes(owners, 7, layer1 + kLayout.SpanOffset(0, BlockId(3)) + 10, 54));  // inside block 3
  EXPECT_TRUE(Writes(owners, 7, kLayout.SpanOffset(2, BlockId(5)), 64));           // last layer
  EXPECT_FALSE(Writes(owners, 7, kLayout.SpanOffset(0, BlockId(3)), 65));          // spills into 4
  EXPECT_FALSE(Writes(owners, 7, kLayout.SpanOffset(0, BlockId(1)) + 63, 2));      // starts in 1
  EXPECT_FALSE(Writes(owners, 8, kLayout.SpanOffset(0, BlockId(2)), 64));          // another token
  EXPECT_FALSE(Writes(owners, KvBlockOwners::kNoToken, kLayout.SpanOffset(0, BlockId(2)), 64));
  EXPECT_FALSE(Writes(owners, 7, kLayout.SpanOffset(0, BlockId(2)), 0));           // empty
}

TEST(KvBlockOwnersTest, RefusesLayerCrossingsAndTheSlackPastTheLastLayer) {
  KvBlockOwners owners(8);
  owners.Grant(9, Blocks({0, 1, 2, 3, 4, 5, 6, 7}));
  const uint64_t layer1 = kLayout.layer_bytes();
  EXPECT_TRUE(Writes(owners, 9, 0, layer1));                  // a whole layer
  EXPECT_FALSE(Writes(owners, 9, layer1 - 64, 128));          // block 7 of layer 0 into block 0 of layer 1
  EXPECT_FALSE(Writes(owners, 9, kLayout.total_bytes(), 64));  // the pool's slack
  EXPECT_FALSE(Writes(owners, 9, ~uint64_t{0} - 8, 64));       // wraps around
}

TEST(KvBlockOwnersTest, RevokedAndRegrantedBlocksRefuseTheOldToken) {
  KvBlockOwners owners(8);
  owners.Grant(11, Blocks({4, 5}));
  owners.Revoke(Blocks({4, 5}));
  EXPECT_FALSE(Writes(owners, 11, kLayout.SpanOffset(1, BlockId(4)), 64));
  owners.Grant(12, Blocks({5}));
  EXPECT_FALSE(Writes(owners, 11, kLayout.SpanOffset(1, BlockId(5)), 64));
  EXPECT_TRUE(Writes(owners, 12, kLayout.SpanOffset(1, BlockId(5)), 64));
  owners.Grant(13, Blocks({-1, 8, 100}));  // outside the table: ignored
  EXPECT_EQ(owners.num_blocks(), 8);
}

// Found by fuzz/kv_put_guard_fuzz.cc: a layout whose layer size wraps 64
// bits (here to exactly 0) divided by zero; one with no layers let every
// offset through as layer 0. Such layouts now refuse every put.
TEST(KvBlockOwnersTest, RefusesEveryPutThroughALayoutWithoutARealSize) {
  KvBlockOwners owners(8);
  owners.Grant(7, Blocks({0, 1}));
  const KvRegionLayout wraps{.num_layers = 1, .num_blocks = int64_t{1} << 40, .block_span_bytes = int64_t{1} << 24};
  const KvRegionLayout total_wraps{.num_layers = 1 << 20, .num_blocks = int64_t{1} << 40, .block_span_bytes = 64};
  const KvRegionLayout no_layers{.num_layers = 0, .num_blocks = 8, .block_span_bytes = 64};
  const KvRegionLayout negative_layers{.num_layers = -1, .num_blocks = 8, .block_span_bytes = 64};
  for (const KvRegionLayout& layout : {wraps, total_wraps, no_layers, negative_layers}) {
    int ran = 0;
    EXPECT_FALSE(owners.WriteIfGranted(layout, 7, 0, 16, [&] { ++ran; })) << layout.num_layers;
    EXPECT_EQ(ran, 0);
  }
}

TEST(KvBlockOwnersTest, NewPutTokensAreNonZeroAndDistinct) {
  std::vector<uint64_t> seen;
  for (int i = 0; i < 64; ++i) {
    const uint64_t t = NewPutToken();
    EXPECT_NE(t, KvBlockOwners::kNoToken);
    for (uint64_t s : seen) EXPECT_NE(s, t);
    seen.push_back(t);
  }
}

TEST(GuardedLoopbackTest, AStaleTokensPutIsRefusedAndTheNewOwnersBytesStay) {
  auto fabric = std::make_shared<LoopbackFabric>();
  LoopbackTransport prefill(fabric);
  LoopbackTransport decode(fabric);
  std::vector<uint8_t> src(kLayout.total_bytes());
  for (size_t i = 0; i < src.size(); ++i) src[i] = kv_transfer_test::PatternByte(3, i);
  std::vector<uint8_t> dst(kLayout.total_bytes() + 64, 0);  // with slack, like a KV pool
  ASSERT_TRUE(prefill.RegisterMemory(src.data(), src.size()).ok());
  auto remote = decode.RegisterMemory(dst.data(), dst.size());
  ASSERT_TRUE(remote.ok());
  auto owners = std::make_shared<KvBlockOwners>(kLayout.num_blocks);
  ASSERT_TRUE(decode.GuardPuts({owners, kLayout}));

  owners->Grant(21, Blocks({1, 2}));  // the first reservation
  auto old_session = prefill.Connect(*remote, 21);
  ASSERT_TRUE(old_session.ok());
  ASSERT_TRUE(PutLayerBlocks(**old_session, kLayout, kLayout, 0, Blocks({0}), Blocks({1})).ok());
  owners->Revoke(Blocks({1, 2}));     // released...
  owners->Grant(22, Blocks({2, 1}));  // ...and its blocks reserved again
  auto new_session = prefill.Connect(*remote, 22);
  ASSERT_TRUE(new_session.ok());
  ASSERT_TRUE(PutLayerBlocks(**new_session, kLayout, kLayout, 0, Blocks({5, 6}), Blocks({2, 1})).ok());

  // The late put of the first reservation: refused, sticky, nothing written.
  const std::vector<uint8_t> before = dst;
  absl::StatusOr<int> late = PutLayerBlocks(**old_session, kLayout, kLayout, 1, Blocks({0}), Blocks({1}));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.status().message(), HasSubstr("not reserved under this transfer's token"));
  EXPECT_EQ((*old_session)->Flush(absl::Seconds(1)).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(dst, before);
  EXPECT_TRUE((*new_session)->Flush(absl::Seconds(1)).ok());

  std::vector<uint8_t> expected(dst.size(), 0);
  std::copy_n(src.begin(), 64, expected.begin() + kLayout.SpanOffset(0, BlockId(1)));  // old, before release
  std::copy_n(src.begin() + kLayout.SpanOffset(0, BlockId(5)), 64, expected.begin() + kLayout.SpanOffset(0, BlockId(2)));
  std::copy_n(src.begin() + kLayout.SpanOffset(0, BlockId(6)), 64, expected.begin() + kLayout.SpanOffset(0, BlockId(1)));
  EXPECT_EQ(dst, expected);

  // Unstamped sessions and writes into the slack are refused too.
  auto unstamped = prefill.Connect(*remote);
  ASSERT_TRUE(unstamped.ok());
  EXPECT_EQ((*unstamped)->Put(0, kLayout.SpanOffset(0, BlockId(2)), 64).code(),
            absl::StatusCode::kFailedPrecondition);
  auto slack = prefill.Connect(*remote, 22);
  ASSERT_TRUE(slack.ok());
  EXPECT_EQ((*slack)->Put(0, kLayout.total_bytes(), 64).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(dst, expected);
  EXPECT_EQ(decode.stats().puts_refused_total, 3u);  // the late put, the unstamped one, the slack one
  EXPECT_EQ(prefill.stats().puts_refused_total, 0u);
}

}  // namespace
}  // namespace tandem
