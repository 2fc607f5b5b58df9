// PromptKvTransfer: a destination from the wire (per-rank KvLayout and
// descriptor) is checked against this worker's ranks with exact error codes,
// and a valid one moves each rank's heads into the decode ranks' regions.
#include "prefill_worker/prompt_kv_transfer.h"

#include <cstdint>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kv_transfer/loopback/loopback_transport.h"

namespace tandem {
namespace {

constexpr int64_t kLayers = 2, kBlocks = 4, kHeadBytes = 16, kTotalHeads = 4;

// A TP group of `size` ranks over 4 KV heads, each rank's pool registered
// with its own loopback transport.
struct Group {
  std::vector<std::vector<uint8_t>> memory;
  std::vector<std::unique_ptr<LoopbackTransport>> transports;
  std::vector<MemoryDescriptor> descriptors;
  LocalKvGroup local;

  Group(const std::shared_ptr<LoopbackFabric>& fabric, int size, uint8_t fill) {
    local.total_kv_heads = kTotalHeads;
    local.dtype = "BF16";
    const int64_t heads = kTotalHeads / size;
    for (int r = 0; r < size; ++r) {
      const KvRegionLayout l{kLayers, kBlocks, 2 * heads * kHeadBytes, heads};
      memory.emplace_back(l.total_bytes(), fill);
      transports.push_back(std::make_unique<LoopbackTransport>(fabric));
      descriptors.push_back(*transports.back()->RegisterMemory(memory.back().data(), memory.back().size()));
      local.ranks.push_back({transports.back().get(), l, {r * heads, heads}});
    }
  }

  v1::KvDestination Destination(std::vector<uint32_t> blocks) const {
    v1::KvDestination d;
    for (uint32_t b : blocks) d.add_block_ids(b);
    for (size_t r = 0; r < local.ranks.size(); ++r) {
      const LocalKvRank& rank = local.ranks[r];
      v1::KvRankRegion* region = d.add_ranks();
      region->set_memory_descriptor(descriptors[r].Serialize());
      v1::KvLayout* l = region->mutable_layout();
      l->set_num_layers(kLayers);
      l->set_dtype(local.dtype);
      l->set_num_kv_heads(static_cast<uint32_t>(rank.heads.num_heads));
      l->set_block_span_bytes(static_cast<uint64_t>(rank.layout.block_span_bytes));
      l->set_layer_bytes(rank.layout.layer_bytes());
      l->set_kv_head_begin(static_cast<uint32_t>(rank.heads.head_begin));
      l->set_total_kv_heads(kTotalHeads);
      l->set_tp_rank(static_cast<uint32_t>(r));
      l->set_tp_size(static_cast<uint32_t>(local.ranks.size()));
    }
    return d;
  }
};

TEST(PromptKvTransferTest, MovesEveryHeadFromTwoRanksIntoFour) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 2, 0), decode(fabric, 4, 0);
  // Source byte = 10 * model head + 1 (K) or + 2 (V), in block 1 only.
  for (int r = 0; r < 2; ++r) {
    const KvRegionLayout& l = prefill.local.ranks[r].layout;
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        for (int64_t h = 0; h < 2; ++h) {
          const uint64_t off = l.SpanOffset(layer, BlockId(1)) + (kv * 2 + h) * kHeadBytes;
          std::fill_n(prefill.memory[r].begin() + off, kHeadBytes, static_cast<uint8_t>(10 * (r * 2 + h) + 1 + kv));
        }
      }
    }
  }
  auto t = PromptKvTransfer::Connect(prefill.local, decode.Destination({3}));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->num_sessions(), 4u);  // each decode rank from the one prefill rank holding its head
  const std::vector<BlockId> src = {BlockId(1)};
  for (int64_t layer = 0; layer < kLayers; ++layer) {
    for (int r = 0; r < 2; ++r) ASSERT_TRUE((*t)->PutLayer(r, layer, src).ok());
  }
  ASSERT_TRUE((*t)->Flush(absl::Seconds(1)).ok());
  EXPECT_EQ((*t)->bytes_put(), static_cast<uint64_t>(4 * kLayers * 2 * kHeadBytes));
  for (int r = 0; r < 4; ++r) {
    const KvRegionLayout& l = decode.local.ranks[r].layout;
    std::vector<uint8_t> want(l.total_bytes(), 0);
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      const uint64_t off = l.SpanOffset(layer, BlockId(3));
      std::fill_n(want.begin() + off, kHeadBytes, static_cast<uint8_t>(10 * r + 1));
      std::fill_n(want.begin() + off + kHeadBytes, kHeadBytes, static_cast<uint8_t>(10 * r + 2));
    }
    EXPECT_EQ(decode.memory[r], want) << "decode rank " << r;
  }
}

TEST(PromptKvTransferTest, ABadDestinationIsInvalidArgumentBeforeAnythingMoves) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 2, 7), decode(fabric, 2, 0);
  auto code = [&](const v1::KvDestination& d) { return PromptKvTransfer::Connect(prefill.local, d).status().code(); };
  const v1::KvDestination good = decode.Destination({0});
  EXPECT_EQ(code(good), absl::StatusCode::kOk);

  v1::KvDestination none = good;
  none.clear_ranks();
  EXPECT_EQ(code(none), absl::StatusCode::kInvalidArgument);
  v1::KvDestination other_model = good;
  other_model.mutable_ranks(0)->mutable_layout()->set_total_kv_heads(8);
  EXPECT_EQ(code(other_model), absl::StatusCode::kInvalidArgument);
  v1::KvDestination other_dtype = good;  // twice the bytes per head
  for (auto& r : *other_dtype.mutable_ranks()) {
    r.mutable_layout()->set_block_span_bytes(r.layout().block_span_bytes() * 2);
    r.mutable_layout()->set_layer_bytes(r.layout().layer_bytes() * 2);
  }
  EXPECT_EQ(code(other_dtype), absl::StatusCode::kInvalidArgument);
  // Same bytes per head, other numbers: the dtype alone must refuse it.
  for (const char* dtype : {"F16", "I8", "F8_E4M3", ""}) {
    v1::KvDestination same_size = good;
    for (auto& r : *same_size.mutable_ranks()) r.mutable_layout()->set_dtype(dtype);
    const absl::Status st = PromptKvTransfer::Connect(prefill.local, same_size).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << dtype;
    EXPECT_NE(st.message().find("--kv-cache-dtype"), std::string::npos) << st;
  }
  v1::KvDestination other_layers = good;
  other_layers.mutable_ranks(1)->mutable_layout()->set_num_layers(kLayers + 1);
  EXPECT_EQ(code(other_layers), absl::StatusCode::kInvalidArgument);
  v1::KvDestination uncovered = good;  // rank 1 claims heads past the model's
  uncovered.mutable_ranks(1)->mutable_layout()->set_kv_head_begin(3);
  EXPECT_EQ(code(uncovered), absl::StatusCode::kInvalidArgument);
  v1::KvDestination zero_span = good;
  zero_span.mutable_ranks(0)->mutable_layout()->set_block_span_bytes(0);
  EXPECT_EQ(code(zero_span), absl::StatusCode::kInvalidArgument);
  v1::KvDestination garbage = good;
  garbage.mutable_ranks(0)->set_memory_descriptor("not a descriptor");
  EXPECT_EQ(code(garbage), absl::StatusCode::kInvalidArgument);

  // A prompt of another length than the reservation: the rank's error sticks.
  auto t = PromptKvTransfer::Connect(prefill.local, good);
  ASSERT_TRUE(t.ok());
  const std::vector<BlockId> two = {BlockId(0), BlockId(1)};
  EXPECT_EQ((*t)->PutLayer(0, 0, two).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->Flush(absl::Seconds(1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->bytes_put(), 0u);
  EXPECT_EQ(decode.memory[0], std::vector<uint8_t>(decode.memory[0].size(), 0));
}

// Found by fuzz/kv_destination_fuzz.cc: a layout whose layer size puts
// layer 1 past 2^64 made put offsets wrap into layer 0's blocks (inside the
// region, so no bounds check caught it); one larger than its region, or a
// block id outside the layout, was only refused put by put, if at all.
TEST(PromptKvTransferTest, ALayoutPastItsRegionOrABlockOutsideItIsRefusedAtConnect) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 2, 7), decode(fabric, 2, 0);
  auto code = [&](const v1::KvDestination& d) { return PromptKvTransfer::Connect(prefill.local, d).status().code(); };
  ASSERT_EQ(code(decode.Destination({kBlocks - 1})), absl::StatusCode::kOk);

  v1::KvDestination wraps = decode.Destination({1});
  const uint64_t span = wraps.ranks(0).layout().block_span_bytes();
  wraps.mutable_ranks(0)->mutable_layout()->set_layer_bytes(UINT64_MAX / span * span);
  EXPECT_EQ(code(wraps), absl::StatusCode::kInvalidArgument);
  v1::KvDestination past_region = decode.Destination({1});
  past_region.mutable_ranks(1)->mutable_layout()->set_layer_bytes(2 * kBlocks * span);
  EXPECT_EQ(code(past_region), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(decode.Destination({0, kBlocks})), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(decode.Destination({UINT32_MAX})), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem
