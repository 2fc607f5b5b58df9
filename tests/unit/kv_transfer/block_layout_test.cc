// PutLayerBlocks over the loopback transport: exact spans land in the mapped
// destination blocks, runs coalesce, and bad input sends nothing.
#include "kv_transfer/block_layout.h"

#include <cstdint>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kv_transfer/loopback/loopback_transport.h"

namespace tandem {
namespace {

class PutLayerBlocksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (size_t i = 0; i < src_.size(); ++i) src_[i] = static_cast<uint8_t>(i * 7 + (i >> 9));
    ASSERT_TRUE(prefill_.RegisterMemory(src_.data(), src_.size()).ok());
    auto remote = decode_.RegisterMemory(dst_.data(), dst_.size());
    ASSERT_TRUE(remote.ok());
    auto session = prefill_.Connect(*remote);
    ASSERT_TRUE(session.ok());
    session_ = std::move(*session);
  }

  const KvRegionLayout local_{.num_layers = 3, .num_blocks = 8, .block_span_bytes = 64};
  const KvRegionLayout remote_{.num_layers = 3, .num_blocks = 12, .block_span_bytes = 64};
  std::vector<uint8_t> src_ = std::vector<uint8_t>(local_.total_bytes());
  std::vector<uint8_t> dst_ = std::vector<uint8_t>(remote_.total_bytes(), 0);
  std::shared_ptr<LoopbackFabric> fabric_ = std::make_shared<LoopbackFabric>();
  LoopbackTransport prefill_{fabric_};
  LoopbackTransport decode_{fabric_};
  std::unique_ptr<TransferSession> session_;
};

TEST_F(PutLayerBlocksTest, ShipsEachLayerIntoTheMappedBlocksAndCoalescesRuns) {
  const std::vector<BlockId> src = {BlockId(0), BlockId(1), BlockId(2), BlockId(5), BlockId(3)};
  const std::vector<BlockId> dst = {BlockId(4), BlockId(5), BlockId(6), BlockId(7), BlockId(11)};
  for (int64_t layer = 0; layer < 3; ++layer) {
    auto puts = PutLayerBlocks(*session_, local_, remote_, layer, src, dst);
    ASSERT_TRUE(puts.ok()) << puts.status();
    EXPECT_EQ(*puts, 3);  // [0,1,2]->[4,5,6], 5->7, 3->11
  }
  ASSERT_TRUE(session_->Flush(absl::Seconds(1)).ok());

  std::vector<uint8_t> expected(dst_.size(), 0);
  for (int64_t layer = 0; layer < 3; ++layer) {
    for (size_t i = 0; i < src.size(); ++i) {
      const uint64_t from = local_.SpanOffset(layer, src[i]);
      const uint64_t to = remote_.SpanOffset(layer, dst[i]);
      std::copy(src_.begin() + from, src_.begin() + from + 64, expected.begin() + to);
    }
  }
  EXPECT_EQ(dst_, expected);
  EXPECT_EQ(session_->bytes_put(), 3u * 5u * 64u);
}

TEST_F(PutLayerBlocksTest, RejectsBadInputBeforeSendingAnything) {
  const std::vector<BlockId> ok = {BlockId(0), BlockId(1)};
  const std::vector<BlockId> bad_src = {BlockId(0), BlockId(8)};
  const std::vector<BlockId> bad_dst = {BlockId(1), BlockId(12)};
  const std::vector<BlockId> negative = {BlockId(-1), BlockId(1)};
  const std::vector<BlockId> one = {BlockId(0)};
  KvRegionLayout other_span = remote_;
  other_span.block_span_bytes = 128;
  KvRegionLayout empty = remote_;
  empty.num_layers = 0;

  auto code = [&](const KvRegionLayout& r, int64_t layer, const std::vector<BlockId>& s,
                  const std::vector<BlockId>& d) {
    return PutLayerBlocks(*session_, local_, r, layer, s, d).status().code();
  };
  EXPECT_EQ(code(remote_, 0, bad_src, ok), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(remote_, 0, ok, bad_dst), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(remote_, 0, negative, ok), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(remote_, 0, ok, one), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(remote_, 3, ok, ok), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(remote_, -1, ok, ok), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(other_span, 0, ok, ok), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(empty, 0, ok, ok), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(session_->bytes_put(), 0u);
  EXPECT_EQ(dst_, std::vector<uint8_t>(dst_.size(), 0));
}

}  // namespace
}  // namespace tandem
