// LayerShipper as the step observer of a real LlmEngine (bundled model),
// shipping over loopback transports into a synthetic decode pool: each
// layer's puts go out as that layer is written, in the step that completes
// the prompt (not in earlier chunks), with exact put counts per layer and
// exact bytes, between TP groups of equal and different sizes; the bytes
// land in the destination blocks and nowhere else. Cancellation before or
// during the step, a destination of another length, and a peer that went
// away stop the posting with the right error; Take() hands the shipment
// over once and the engine's blocks come back when released.
#include "prefill_worker/layer_shipper.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/core/model_executor.h"
#include "gtest/gtest.h"
#include "kv_transfer/loopback/loopback_transport.h"
#include "tests/testing/engine_test_tools.h"

namespace tandem {
namespace {

using testing::GreedyRequest;
using testing::TestPrompt;

constexpr int64_t kTotalHeads = 2, kLayers = 6, kHeadBytes = 16 * 32 * 4;  // tokens x head_dim x f32

// The prefill side: an engine whose ranks' pools are registered with
// loopback transports (one per rank), and the shipper as its observer
// behind a recorder of the puts each rank had posted after each layer.
struct Source : public StepObserver {
  std::unique_ptr<LlmEngine> engine;
  std::vector<std::unique_ptr<LoopbackTransport>> transports;
  LocalKvGroup local;
  std::unique_ptr<LayerShipper> shipper;
  std::mutex mu;
  std::map<int, std::vector<uint64_t>> puts_after_layer;  // rank -> cumulative puts

  Source(const std::shared_ptr<LoopbackFabric>& fabric, int tp, int64_t budget = 2048) {
    absl::StatusOr<std::unique_ptr<ModelExecutor>> model = LoadExecutor(testing::BundledModelDir(), tp);
    EXPECT_TRUE(model.ok()) << model.status();
    EngineConfig config = testing::WorkerEngineConfig(32);
    config.scheduler.max_num_batched_tokens = budget;
    absl::StatusOr<std::unique_ptr<LlmEngine>> e = LlmEngine::Create(*std::move(model), config);
    EXPECT_TRUE(e.ok()) << e.status();
    engine = *std::move(e);
    local.total_kv_heads = kTotalHeads;
    local.dtype = "F32";
    for (int r = 0; r < tp; ++r) {
      KvCache& cache = engine->kv_cache(r);
      const KvCacheShape& shape = cache.shape();
      transports.push_back(std::make_unique<LoopbackTransport>(fabric));
      EXPECT_TRUE(transports.back()->RegisterMemory(cache.Memory().data(), cache.Memory().size()).ok());
      local.ranks.push_back({transports.back().get(),
                             {shape.num_layers, shape.num_blocks, shape.block_span_bytes(), shape.num_kv_heads},
                             {r * shape.num_kv_heads, shape.num_kv_heads}});
    }
    shipper = std::make_unique<LayerShipper>(&local);
    engine->SetStepObserver(this);
  }
  ~Source() override { engine->SetStepObserver(nullptr); }

  void OnStepPlanned(const SchedulerOutput& plan, const KvCacheManager& kv) override {
    shipper->OnStepPlanned(plan, kv);
  }
  void OnLayerKvWritten(int tp_rank, int64_t layer) override {
    shipper->OnLayerKvWritten(tp_rank, layer);
    std::lock_guard<std::mutex> lock(mu);
    std::vector<uint64_t>& v = puts_after_layer[tp_rank];
    EXPECT_EQ(static_cast<int64_t>(v.size()) % kLayers, layer);
    v.push_back(transports[static_cast<size_t>(tp_rank)]->stats().puts_total);
  }

  uint64_t puts() const {
    uint64_t n = 0;
    for (const auto& t : transports) n += t->stats().puts_total;
    return n;
  }
  // K (kv 0) or V (kv 1) of model head `head` in block `block`, layer `layer`.
  std::vector<uint8_t> Head(int64_t head, int kv, int64_t layer, BlockId block) {
    for (size_t r = 0; r < local.ranks.size(); ++r) {
      const LocalKvRank& rank = local.ranks[r];
      if (head < rank.heads.head_begin || head >= rank.heads.head_begin + rank.heads.num_heads) continue;
      const uint64_t off = rank.layout.SpanOffset(layer, block) +
                           static_cast<uint64_t>((kv * rank.heads.num_heads + head - rank.heads.head_begin) *
                                                 kHeadBytes);
      const uint8_t* base = engine->kv_cache(static_cast<int>(r)).Memory().data() + off;
      return std::vector<uint8_t>(base, base + kHeadBytes);
    }
    return {};
  }
  // Steps until `id` is prefilled; returns its first token (or -1).
  int32_t PrefillToFirstToken(const std::string& id, int max_steps = 16) {
    for (int i = 0; i < max_steps && engine->HasUnfinishedRequests(); ++i) {
      absl::StatusOr<std::vector<RequestOutput>> outs = engine->Step();
      EXPECT_TRUE(outs.ok()) << outs.status();
      if (!outs.ok()) return -1;
      for (const RequestOutput& o : *outs) {
        if (o.request_id == id && !o.new_token_ids.empty()) return o.new_token_ids.front();
      }
    }
    return -1;
  }
};

// The decode side: `tp` ranks of a zeroed pool of `num_blocks` blocks.
struct Dest {
  std::vector<std::vector<uint8_t>> memory;
  std::vector<std::unique_ptr<LoopbackTransport>> transports;
  std::vector<MemoryDescriptor> descriptors;
  std::vector<KvRegionLayout> layouts;
  std::vector<int64_t> head_begin;

  Dest(const std::shared_ptr<LoopbackFabric>& fabric, int tp, int64_t num_blocks) {
    const int64_t heads = kTotalHeads / tp;
    for (int r = 0; r < tp; ++r) {
      layouts.push_back({kLayers, num_blocks, 2 * heads * kHeadBytes, heads});
      head_begin.push_back(r * heads);
      memory.emplace_back(layouts.back().total_bytes(), 0);
      transports.push_back(std::make_unique<LoopbackTransport>(fabric));
      descriptors.push_back(*transports.back()->RegisterMemory(memory.back().data(), memory.back().size()));
    }
  }

  v1::KvDestination Destination(const std::vector<uint32_t>& blocks) const {
    v1::KvDestination d;
    d.set_transport("loopback");
    for (uint32_t b : blocks) d.add_block_ids(b);
    for (size_t r = 0; r < layouts.size(); ++r) {
      v1::KvRankRegion* region = d.add_ranks();
      region->set_memory_descriptor(descriptors[r].Serialize());
      v1::KvLayout* l = region->mutable_layout();
      l->set_num_layers(kLayers);
      l->set_block_size(16);
      l->set_head_dim(32);
      l->set_dtype("F32");
      l->set_num_kv_heads(static_cast<uint32_t>(layouts[r].num_kv_heads));
      l->set_block_span_bytes(static_cast<uint64_t>(layouts[r].block_span_bytes));
      l->set_layer_bytes(layouts[r].layer_bytes());
      l->set_kv_head_begin(static_cast<uint32_t>(head_begin[r]));
      l->set_total_kv_heads(kTotalHeads);
      l->set_tp_rank(static_cast<uint32_t>(r));
      l->set_tp_size(static_cast<uint32_t>(layouts.size()));
    }
    return d;
  }

  std::vector<uint8_t> Head(int64_t head, int kv, int64_t layer, uint32_t block) const {
    for (size_t r = 0; r < layouts.size(); ++r) {
      const int64_t n = layouts[r].num_kv_heads;
      if (head < head_begin[r] || head >= head_begin[r] + n) continue;
      const uint64_t off = layouts[r].SpanOffset(layer, BlockId(static_cast<int32_t>(block))) +
                           static_cast<uint64_t>((kv * n + head - head_begin[r]) * kHeadBytes);
      return std::vector<uint8_t>(memory[r].begin() + static_cast<long>(off),
                                  memory[r].begin() + static_cast<long>(off + kHeadBytes));
    }
    return {};
  }

  // Whether every byte outside `blocks` (and, when `layers` < kLayers, in
  // layers past it) is still zero.
  bool ZeroOutside(const std::vector<uint32_t>& blocks, int64_t layers = kLayers) const {
    for (size_t r = 0; r < layouts.size(); ++r) {
      for (int64_t layer = 0; layer < kLayers; ++layer) {
        for (int64_t b = 0; b < layouts[r].num_blocks; ++b) {
          const bool written =
              layer < layers && std::find(blocks.begin(), blocks.end(), static_cast<uint32_t>(b)) != blocks.end();
          if (written) continue;
          const uint64_t off = layouts[r].SpanOffset(layer, BlockId(static_cast<int32_t>(b)));
          const auto begin = memory[r].begin() + static_cast<long>(off);
          if (std::any_of(begin, begin + layouts[r].block_span_bytes, [](uint8_t x) { return x != 0; })) return false;
        }
      }
    }
    return true;
  }
};

EngineRequest PrefillOnly(const std::string& id, std::vector<int32_t> prompt) {
  EngineRequest r = GreedyRequest(id, std::move(prompt), 8);
  r.prefill_only = true;
  return r;
}

void ExpectLanded(Source& src, const std::vector<BlockId>& src_blocks, const Dest& dst,
                  const std::vector<uint32_t>& dst_blocks, int64_t layers = kLayers) {
  ASSERT_EQ(src_blocks.size(), dst_blocks.size());
  for (int64_t layer = 0; layer < layers; ++layer) {
    for (size_t i = 0; i < src_blocks.size(); ++i) {
      for (int64_t head = 0; head < kTotalHeads; ++head) {
        for (int kv = 0; kv < 2; ++kv) {
          ASSERT_EQ(dst.Head(head, kv, layer, dst_blocks[i]), src.Head(head, kv, layer, src_blocks[i]))
              << "layer " << layer << " prompt block " << i << " head " << head << " kv " << kv;
        }
      }
    }
  }
  EXPECT_TRUE(dst.ZeroOutside(dst_blocks, layers));
}

void ReleaseAndExpectEmpty(Source& src, const std::vector<std::string>& ids) {
  for (const std::string& id : ids) EXPECT_TRUE(src.engine->ReleasePrefilled(id).ok()) << id;
  const EngineStats s = src.engine->Stats();
  EXPECT_TRUE(testing::Idle(s)) << testing::Describe(s);
}

const std::function<absl::Status()> kNeverCancelled = [] { return absl::OkStatus(); };
absl::Status Cancelled() { return absl::CancelledError("cancelled by the test"); }

TEST(LayerShipperTest, PostsEachLayerAsItIsWrittenInThePromptsLastStep) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1);
  Dest dst(fabric, 1, 16);
  const std::vector<uint32_t> dst_blocks = {9, 4, 6};  // scattered: one put per block and layer
  ASSERT_TRUE(src.shipper->Expect("p", dst.Destination(dst_blocks), kNeverCancelled).ok());
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("p", TestPrompt(40))).ok());
  ASSERT_GE(src.PrefillToFirstToken("p"), 0);
  EXPECT_EQ(src.engine->Stats().num_steps, 1);

  const std::vector<uint64_t> want = {3, 6, 9, 12, 15, 18};
  EXPECT_EQ(src.puts_after_layer[0], want);
  LayerShipper::Shipment s = src.shipper->Take("p");
  EXPECT_TRUE(s.shipped);
  EXPECT_TRUE(s.status.ok()) << s.status;
  EXPECT_EQ(s.num_blocks, 3u);
  ASSERT_NE(s.transfer, nullptr);
  EXPECT_EQ(s.transfer->bytes_put(), static_cast<uint64_t>(kLayers * 3 * 2 * kTotalHeads * kHeadBytes));
  EXPECT_EQ(src.transports[0]->stats().flushes_total, 0u);  // flushing is the caller's (KvSender)
  ASSERT_TRUE(s.transfer->Flush(absl::Seconds(10)).ok());

  absl::StatusOr<std::vector<BlockId>> blocks = src.engine->PrefilledBlocks("p");
  ASSERT_TRUE(blocks.ok());
  ExpectLanded(src, *blocks, dst, dst_blocks);
  ReleaseAndExpectEmpty(src, {"p"});
  LayerShipper::Shipment again = src.shipper->Take("p");  // handed over once
  EXPECT_FALSE(again.shipped);
  EXPECT_EQ(again.status.code(), absl::StatusCode::kNotFound);
}

TEST(LayerShipperTest, ChunkedPrefillShipsOnlyInTheStepOfTheLastChunk) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1, /*budget=*/16);
  Dest dst(fabric, 1, 16);
  const std::vector<uint32_t> dst_blocks = {2, 3, 4};  // consecutive: merged where the source is too
  ASSERT_TRUE(src.shipper->Expect("p", dst.Destination(dst_blocks), kNeverCancelled).ok());
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("p", TestPrompt(40))).ok());
  for (int step = 0; step < 2; ++step) {
    absl::StatusOr<std::vector<RequestOutput>> outs = src.engine->Step();
    ASSERT_TRUE(outs.ok());
    EXPECT_TRUE(outs->empty());
    EXPECT_EQ(src.puts(), 0u) << "after chunk " << step;
  }
  const int32_t first = src.PrefillToFirstToken("p");
  EXPECT_EQ(src.engine->Stats().num_steps, 3);
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> whole =
      testing::DirectTokens({GreedyRequest("p", TestPrompt(40), 1)});
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(first, whole->at("p").front());  // chunking changes nothing

  absl::StatusOr<std::vector<BlockId>> blocks = src.engine->PrefilledBlocks("p");
  ASSERT_TRUE(blocks.ok());
  int runs = 1;  // puts per layer: runs consecutive on both sides
  for (size_t i = 1; i < blocks->size(); ++i) {
    if ((*blocks)[i].value() != (*blocks)[i - 1].value() + 1) ++runs;
  }
  EXPECT_EQ(src.puts(), static_cast<uint64_t>(kLayers * runs));
  LayerShipper::Shipment s = src.shipper->Take("p");
  ASSERT_TRUE(s.shipped && s.status.ok()) << s.status;
  EXPECT_EQ(s.transfer->bytes_put(), static_cast<uint64_t>(kLayers * 3 * 2 * kTotalHeads * kHeadBytes));
  ASSERT_TRUE(s.transfer->Flush(absl::Seconds(10)).ok());
  ExpectLanded(src, *blocks, dst, dst_blocks);
  ReleaseAndExpectEmpty(src, {"p"});
}

TEST(LayerShipperTest, TensorParallelGroupsOfDifferentSizesPutEachHeadOnce) {
  for (const auto& [src_tp, dst_tp] : std::vector<std::pair<int, int>>{{2, 1}, {1, 2}}) {
    SCOPED_TRACE("prefill tp " + std::to_string(src_tp) + " -> decode tp " + std::to_string(dst_tp));
    auto fabric = std::make_shared<LoopbackFabric>();
    Source src(fabric, src_tp);
    Dest dst(fabric, dst_tp, 16);
    const std::vector<uint32_t> dst_blocks = {1, 2, 3};
    ASSERT_TRUE(src.shipper->Expect("p", dst.Destination(dst_blocks), kNeverCancelled).ok());
    ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("p", TestPrompt(40))).ok());
    ASSERT_GE(src.PrefillToFirstToken("p"), 0);
    // Head slices: a K put and a V put per block for each (source, destination) rank pair.
    const uint64_t pairs = static_cast<uint64_t>(std::max(src_tp, dst_tp));
    EXPECT_EQ(src.puts(), kLayers * pairs * 3 * 2);
    for (int r = 0; r < src_tp; ++r) {
      const uint64_t per_layer = 3 * 2 * static_cast<uint64_t>(dst_tp == 2 ? 2 : 1);
      std::vector<uint64_t> want;
      for (int64_t l = 1; l <= kLayers; ++l) want.push_back(per_layer * static_cast<uint64_t>(l));
      EXPECT_EQ(src.puts_after_layer[r], want) << "rank " << r;
    }
    LayerShipper::Shipment s = src.shipper->Take("p");
    ASSERT_TRUE(s.shipped && s.status.ok()) << s.status;
    EXPECT_EQ(s.transfer->bytes_put(), static_cast<uint64_t>(kLayers * 3 * 2 * kTotalHeads * kHeadBytes));
    ASSERT_TRUE(s.transfer->Flush(absl::Seconds(10)).ok());
    absl::StatusOr<std::vector<BlockId>> blocks = src.engine->PrefilledBlocks("p");
    ASSERT_TRUE(blocks.ok());
    ExpectLanded(src, *blocks, dst, dst_blocks);
    ReleaseAndExpectEmpty(src, {"p"});
  }
}

TEST(LayerShipperTest, CancelledBeforeTheStepPostsNothing) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1);
  Dest dst(fabric, 1, 16);
  ASSERT_TRUE(src.shipper->Expect("p", dst.Destination({1, 2, 3}), [] { return Cancelled(); }).ok());
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("p", TestPrompt(40))).ok());
  ASSERT_GE(src.PrefillToFirstToken("p"), 0);
  LayerShipper::Shipment s = src.shipper->Take("p");
  EXPECT_TRUE(s.shipped);
  EXPECT_EQ(s.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(src.puts(), 0u);
  EXPECT_TRUE(dst.ZeroOutside({}));
  ReleaseAndExpectEmpty(src, {"p"});
}

TEST(LayerShipperTest, CancelledMidStepStopsBeforeTheNextLayer) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1);
  Dest dst(fabric, 1, 16);
  const std::vector<uint32_t> dst_blocks = {5, 1, 3};
  // Polled once when planning, then before each layer: gone before layer 2.
  auto polls = std::make_shared<std::atomic<int>>(0);
  ASSERT_TRUE(src.shipper->Expect("p", dst.Destination(dst_blocks), [polls] { return ++*polls > 3 ? Cancelled() : absl::OkStatus(); }).ok());
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("p", TestPrompt(40))).ok());
  ASSERT_GE(src.PrefillToFirstToken("p"), 0);
  EXPECT_EQ(src.puts_after_layer[0], (std::vector<uint64_t>{3, 6, 6, 6, 6, 6}));
  LayerShipper::Shipment s = src.shipper->Take("p");
  EXPECT_TRUE(s.shipped);
  EXPECT_EQ(s.status.code(), absl::StatusCode::kCancelled);
  ASSERT_NE(s.transfer, nullptr);
  EXPECT_EQ(s.transfer->bytes_put(), static_cast<uint64_t>(2 * 3 * 2 * kTotalHeads * kHeadBytes));
  EXPECT_EQ(s.transfer->Flush(absl::Seconds(10)).code(), absl::StatusCode::kCancelled);
  absl::StatusOr<std::vector<BlockId>> blocks = src.engine->PrefilledBlocks("p");
  ASSERT_TRUE(blocks.ok());
  ExpectLanded(src, *blocks, dst, dst_blocks, /*layers=*/2);
  ReleaseAndExpectEmpty(src, {"p"});
}

TEST(LayerShipperTest, ADestinationOfAnotherLengthFailsWithNothingPosted) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1);
  Dest dst(fabric, 1, 16);
  ASSERT_TRUE(src.shipper->Expect("p", dst.Destination({1, 2}), kNeverCancelled).ok());
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("p", TestPrompt(40))).ok());
  ASSERT_GE(src.PrefillToFirstToken("p"), 0);
  LayerShipper::Shipment s = src.shipper->Take("p");
  EXPECT_TRUE(s.shipped);
  EXPECT_EQ(s.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.num_blocks, 3u);
  EXPECT_EQ(src.puts(), 0u);
  EXPECT_TRUE(dst.ZeroOutside({}));
  ReleaseAndExpectEmpty(src, {"p"});
}

TEST(LayerShipperTest, ADestinationHoldingThePromptsFirstBlocksGetsOnlyTheRest) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1);
  Dest dst(fabric, 1, 16);
  // A 40-token prompt (3 blocks); the decode worker's prefix cache holds
  // the first 2, so it reserved one block for the third.
  const std::vector<uint32_t> dst_blocks = {7};
  v1::KvDestination d = dst.Destination(dst_blocks);
  d.set_num_cached_blocks(2);
  ASSERT_TRUE(src.shipper->Expect("p", d, kNeverCancelled).ok());
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("p", TestPrompt(40))).ok());
  ASSERT_GE(src.PrefillToFirstToken("p"), 0);
  LayerShipper::Shipment s = src.shipper->Take("p");
  EXPECT_TRUE(s.status.ok()) << s.status;
  EXPECT_EQ(s.num_blocks, 1u);
  ASSERT_NE(s.transfer, nullptr);
  EXPECT_EQ(s.transfer->bytes_put(), static_cast<uint64_t>(kLayers * 1 * 2 * kTotalHeads * kHeadBytes));
  ASSERT_TRUE(s.transfer->Flush(absl::Seconds(10)).ok());
  absl::StatusOr<std::vector<BlockId>> blocks = src.engine->PrefilledBlocks("p");
  ASSERT_TRUE(blocks.ok());
  ExpectLanded(src, {(*blocks)[2]}, dst, dst_blocks);  // the third block, and nothing else anywhere
  ReleaseAndExpectEmpty(src, {"p"});
  // A destination claiming more cached blocks than the prompt has fails, nothing posted.
  v1::KvDestination bad = dst.Destination({5});
  bad.set_num_cached_blocks(4);
  ASSERT_TRUE(src.shipper->Expect("q", bad, kNeverCancelled).ok());
  const uint64_t puts = src.puts();
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("q", TestPrompt(40, 3))).ok());
  ASSERT_GE(src.PrefillToFirstToken("q"), 0);
  LayerShipper::Shipment t = src.shipper->Take("q");
  EXPECT_EQ(t.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status.message(), "destination holds 4 and has 1 blocks for a prompt of 3");
  EXPECT_EQ(src.puts(), puts);
  ReleaseAndExpectEmpty(src, {"q"});
}

TEST(LayerShipperTest, APeerGoneBeforeTheStepFailsTheShipmentUnavailable) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1);
  auto dst = std::make_unique<Dest>(fabric, 1, 16);
  ASSERT_TRUE(src.shipper->Expect("p", dst->Destination({1, 2, 3}), kNeverCancelled).ok());
  dst.reset();  // the decode worker's transport went away
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("p", TestPrompt(40))).ok());
  ASSERT_GE(src.PrefillToFirstToken("p"), 0);
  LayerShipper::Shipment s = src.shipper->Take("p");
  EXPECT_TRUE(s.shipped);
  EXPECT_EQ(s.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(src.puts(), 0u);
  ReleaseAndExpectEmpty(src, {"p"});
}

TEST(LayerShipperTest, ExpectRefusesBadDestinationsAndKeepsNoEntry) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1);
  v1::KvDestination gone, malformed;
  {
    Dest dst(fabric, 1, 16);
    gone = dst.Destination({1, 2, 3});
    malformed = dst.Destination({1, 2, 3});
    malformed.mutable_ranks(0)->mutable_layout()->set_num_layers(kLayers + 1);
    EXPECT_EQ(src.shipper->Expect("malformed", malformed, kNeverCancelled).code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(src.shipper->Expect("gone", gone, kNeverCancelled).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(src.shipper->Take("malformed").status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(src.shipper->Take("gone").status.code(), absl::StatusCode::kNotFound);
}

TEST(LayerShipperTest, OnlyExpectedPrefillOnlyPromptsShipAndForgetDropsOne) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Source src(fabric, 1);
  Dest dst(fabric, 1, 32);
  ASSERT_TRUE(src.shipper->Expect("a", dst.Destination({1, 3}), kNeverCancelled).ok());
  ASSERT_TRUE(src.shipper->Expect("b", dst.Destination({5, 7}), kNeverCancelled).ok());
  ASSERT_TRUE(src.shipper->Expect("full", dst.Destination({9, 11}), kNeverCancelled).ok());
  src.shipper->Forget("b");
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("a", TestPrompt(20, 1))).ok());
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("b", TestPrompt(20, 2))).ok());
  ASSERT_TRUE(src.engine->AddRequest(PrefillOnly("c", TestPrompt(20, 3))).ok());
  ASSERT_TRUE(src.engine->AddRequest(GreedyRequest("full", TestPrompt(20, 4), 1)).ok());  // not prefill-only
  absl::StatusOr<std::vector<RequestOutput>> outs = src.engine->Step();
  ASSERT_TRUE(outs.ok());
  EXPECT_EQ(outs->size(), 4u);  // one step computed all four
  EXPECT_EQ(src.puts(), static_cast<uint64_t>(kLayers * 2));  // a's two scattered blocks only
  LayerShipper::Shipment a = src.shipper->Take("a");
  EXPECT_TRUE(a.shipped && a.status.ok());
  EXPECT_EQ(a.num_blocks, 2u);
  EXPECT_EQ(src.shipper->Take("b").status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(src.shipper->Take("c").status.code(), absl::StatusCode::kNotFound);
  LayerShipper::Shipment full = src.shipper->Take("full");
  EXPECT_FALSE(full.shipped);  // never posted: the caller ships it whole
  EXPECT_TRUE(full.status.ok());
  EXPECT_TRUE(dst.ZeroOutside({1, 3}));
  ReleaseAndExpectEmpty(src, {"a", "b", "c"});
}

}  // namespace
}  // namespace tandem
