// KvSender over loopback transports: a whole-prompt Send posts exactly the
// puts and bytes the layouts call for (runs of consecutive blocks merged,
// head slices between TP groups of different sizes), lands every byte in the
// right destination block and nothing elsewhere, and every failure (bad or
// mismatched destination, peer gone before or after the puts, a transfer
// whose puts failed) answers its caller exactly once with the error and
// nothing put; queued transfers finish before the sender goes.
#include "prefill_worker/kv_sender.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kv_transfer/loopback/loopback_transport.h"

namespace tandem {
namespace {

constexpr int64_t kLayers = 3, kHeadBytes = 32, kTotalHeads = 2;
constexpr auto kHangGuard = std::chrono::seconds(30);

// A TP group of `size` ranks over kTotalHeads KV heads with `num_blocks`
// blocks, each rank's pool registered with its own loopback transport.
// Source pools hold a pattern (byte = f(rank head, layer, block, offset)).
struct Group {
  std::vector<std::vector<uint8_t>> memory;
  std::vector<std::unique_ptr<LoopbackTransport>> transports;
  std::vector<MemoryDescriptor> descriptors;
  LocalKvGroup local;

  Group(const std::shared_ptr<LoopbackFabric>& fabric, int size, int64_t num_blocks, bool pattern) {
    local.total_kv_heads = kTotalHeads;
    const int64_t heads = kTotalHeads / size;
    for (int r = 0; r < size; ++r) {
      const KvRegionLayout l{kLayers, num_blocks, 2 * heads * kHeadBytes, heads};
      memory.emplace_back(l.total_bytes(), 0);
      if (pattern) {
        for (uint64_t i = 0; i < memory.back().size(); ++i) {
          memory.back()[i] = static_cast<uint8_t>((i * 131 + static_cast<uint64_t>(r) * 17 + i / 97) & 0xff);
        }
      }
      transports.push_back(std::make_unique<LoopbackTransport>(fabric));
      descriptors.push_back(*transports.back()->RegisterMemory(memory.back().data(), memory.back().size()));
      local.ranks.push_back({transports.back().get(), l, {r * heads, heads}});
    }
  }

  v1::KvDestination Destination(const std::vector<uint32_t>& blocks) const {
    v1::KvDestination d;
    d.set_transport("loopback");
    for (uint32_t b : blocks) d.add_block_ids(b);
    for (size_t r = 0; r < local.ranks.size(); ++r) {
      const LocalKvRank& rank = local.ranks[r];
      v1::KvRankRegion* region = d.add_ranks();
      region->set_memory_descriptor(descriptors[r].Serialize());
      v1::KvLayout* l = region->mutable_layout();
      l->set_num_layers(kLayers);
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

  TransportStats stats() const {
    TransportStats sum;
    for (const auto& t : transports) {
      const TransportStats s = t->stats();
      sum.bytes_put_total += s.bytes_put_total;
      sum.puts_total += s.puts_total;
      sum.flushes_total += s.flushes_total;
      sum.failures_total += s.failures_total;
    }
    return sum;
  }

  // Head `head` (model numbering), K (kv 0) or V (kv 1), of one block and layer.
  std::vector<uint8_t> Head(int64_t head, int kv, int64_t layer, uint32_t block) const {
    for (size_t r = 0; r < local.ranks.size(); ++r) {
      const LocalKvRank& rank = local.ranks[r];
      if (head < rank.heads.head_begin || head >= rank.heads.head_begin + rank.heads.num_heads) continue;
      const uint64_t off = rank.layout.SpanOffset(layer, BlockId(static_cast<int32_t>(block))) +
                           static_cast<uint64_t>((kv * rank.heads.num_heads + head - rank.heads.head_begin) *
                                                 kHeadBytes);
      return std::vector<uint8_t>(memory[r].begin() + static_cast<long>(off),
                                  memory[r].begin() + static_cast<long>(off + kHeadBytes));
    }
    return {};
  }
};

// Every done callback's result, for the test thread.
class Results {
 public:
  KvSender::Done Callback() {
    return [this](absl::StatusOr<SendResult> r) {
      std::lock_guard<std::mutex> lock(mu_);
      results_.push_back(std::move(r));
    };
  }
  bool WaitFor(size_t n) {
    const auto end = std::chrono::steady_clock::now() + kHangGuard;
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (results_.size() >= n) return true;
      }
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  std::vector<absl::StatusOr<SendResult>> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return results_;
  }

 private:
  std::mutex mu_;
  std::vector<absl::StatusOr<SendResult>> results_;
};

// Sends src -> dst on one sender and returns the single result.
absl::StatusOr<SendResult> SendOne(const Group& from, std::vector<BlockId> src, v1::KvDestination dest) {
  Results results;
  {
    KvSender sender(&from.local, std::chrono::milliseconds(5000), 1);
    sender.Send(std::move(src), std::move(dest), results.Callback());
    EXPECT_TRUE(results.WaitFor(1));
  }
  EXPECT_EQ(results.Get().size(), 1u);  // exactly one answer
  return results.Get().empty() ? absl::UnknownError("no answer") : results.Get().front();
}

std::vector<BlockId> Ids(std::vector<int32_t> v) {
  std::vector<BlockId> out;
  for (int32_t b : v) out.emplace_back(b);
  return out;
}

void ExpectBlocksMoved(const Group& from, const std::vector<uint32_t>& src, const Group& to,
                       const std::vector<uint32_t>& dst) {
  for (int64_t layer = 0; layer < kLayers; ++layer) {
    for (size_t i = 0; i < src.size(); ++i) {
      for (int64_t head = 0; head < kTotalHeads; ++head) {
        for (int kv = 0; kv < 2; ++kv) {
          EXPECT_EQ(to.Head(head, kv, layer, dst[i]), from.Head(head, kv, layer, src[i]))
              << "layer " << layer << " block " << src[i] << " -> " << dst[i] << " head " << head << " kv " << kv;
        }
      }
    }
  }
}

// Every byte of `g` outside `blocks` is still zero.
void ExpectUntouchedOutside(const Group& g, const std::vector<uint32_t>& blocks) {
  for (size_t r = 0; r < g.local.ranks.size(); ++r) {
    const KvRegionLayout& l = g.local.ranks[r].layout;
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      for (int64_t b = 0; b < l.num_blocks; ++b) {
        if (std::find(blocks.begin(), blocks.end(), static_cast<uint32_t>(b)) != blocks.end()) continue;
        const uint64_t off = l.SpanOffset(layer, BlockId(static_cast<int32_t>(b)));
        for (int64_t i = 0; i < l.block_span_bytes; ++i) {
          ASSERT_EQ(g.memory[r][off + static_cast<uint64_t>(i)], 0)
              << "rank " << r << " layer " << layer << " block " << b;
        }
      }
    }
  }
}

TEST(KvSenderTest, SendPostsOneMergedPutPerLayerForConsecutiveBlocks) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 1, 8, true), decode(fabric, 1, 10, false);
  absl::StatusOr<SendResult> r = SendOne(prefill, Ids({1, 2, 3}), decode.Destination({4, 5, 6}));
  ASSERT_TRUE(r.ok()) << r.status();
  const uint64_t span = 2 * kTotalHeads * kHeadBytes;
  EXPECT_EQ(r->bytes, kLayers * 3 * span);
  EXPECT_EQ(r->num_blocks, 3u);
  const TransportStats s = prefill.stats();
  EXPECT_EQ(s.puts_total, static_cast<uint64_t>(kLayers));  // blocks 1-3 -> 4-6: one put per layer
  EXPECT_EQ(s.bytes_put_total, kLayers * 3 * span);
  EXPECT_EQ(s.flushes_total, 1u);
  EXPECT_EQ(s.failures_total, 0u);
  ExpectBlocksMoved(prefill, {1, 2, 3}, decode, {4, 5, 6});
  ExpectUntouchedOutside(decode, {4, 5, 6});
}

TEST(KvSenderTest, SendPostsOnePutPerBlockAndLayerForScatteredBlocks) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 1, 8, true), decode(fabric, 1, 10, false);
  absl::StatusOr<SendResult> r = SendOne(prefill, Ids({0, 2, 5, 6}), decode.Destination({7, 3, 1, 2}));
  ASSERT_TRUE(r.ok()) << r.status();
  const uint64_t span = 2 * kTotalHeads * kHeadBytes;
  EXPECT_EQ(r->bytes, kLayers * 4 * span);
  // Only 5,6 -> 1,2 are consecutive on both sides: 3 puts per layer.
  EXPECT_EQ(prefill.stats().puts_total, static_cast<uint64_t>(3 * kLayers));
  ExpectBlocksMoved(prefill, {0, 2, 5, 6}, decode, {7, 3, 1, 2});
  ExpectUntouchedOutside(decode, {7, 3, 1, 2});
}

TEST(KvSenderTest, SendFromTwoRanksIntoOnePutsEachHeadSliceOnce) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 2, 8, true), decode(fabric, 1, 10, false);
  absl::StatusOr<SendResult> r = SendOne(prefill, Ids({1, 2, 3}), decode.Destination({4, 5, 6}));
  ASSERT_TRUE(r.ok()) << r.status();
  // Every destination head written once: the same bytes as one rank to one.
  EXPECT_EQ(r->bytes, static_cast<uint64_t>(kLayers * 3 * 2 * kTotalHeads * kHeadBytes));
  // Per layer, each source rank puts its K and its V head of each block.
  EXPECT_EQ(prefill.stats().puts_total, static_cast<uint64_t>(kLayers * 2 * 3 * 2));
  EXPECT_EQ(prefill.transports[0]->stats().puts_total, static_cast<uint64_t>(kLayers * 3 * 2));
  EXPECT_EQ(prefill.transports[1]->stats().puts_total, static_cast<uint64_t>(kLayers * 3 * 2));
  EXPECT_EQ(prefill.stats().flushes_total, 2u);  // one session per (source, destination) rank pair
  ExpectBlocksMoved(prefill, {1, 2, 3}, decode, {4, 5, 6});
  ExpectUntouchedOutside(decode, {4, 5, 6});
}

TEST(KvSenderTest, EveryBadDestinationIsRefusedOnceWithNothingPut) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 1, 8, true), decode(fabric, 1, 10, false);
  const v1::KvDestination good = decode.Destination({4, 5, 6});

  v1::KvDestination too_few = decode.Destination({4, 5});
  EXPECT_EQ(SendOne(prefill, Ids({1, 2, 3}), too_few).status().code(), absl::StatusCode::kInvalidArgument);
  v1::KvDestination out_of_range = decode.Destination({4, 5, 10});
  EXPECT_EQ(SendOne(prefill, Ids({1, 2, 3}), out_of_range).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendOne(prefill, Ids({1, 2, 8}), good).status().code(), absl::StatusCode::kInvalidArgument);
  v1::KvDestination garbage = good;
  garbage.mutable_ranks(0)->set_memory_descriptor("not a descriptor");
  EXPECT_EQ(SendOne(prefill, Ids({1, 2, 3}), garbage).status().code(), absl::StatusCode::kInvalidArgument);
  v1::KvDestination other_layers = good;
  other_layers.mutable_ranks(0)->mutable_layout()->set_num_layers(kLayers + 1);
  EXPECT_EQ(SendOne(prefill, Ids({1, 2, 3}), other_layers).status().code(), absl::StatusCode::kInvalidArgument);
  v1::KvDestination no_ranks = good;
  no_ranks.clear_ranks();
  EXPECT_EQ(SendOne(prefill, Ids({1, 2, 3}), no_ranks).status().code(), absl::StatusCode::kInvalidArgument);
  v1::KvDestination other_fabric = Group(std::make_shared<LoopbackFabric>(), 1, 10, false).Destination({4, 5, 6});
  EXPECT_EQ(SendOne(prefill, Ids({1, 2, 3}), other_fabric).status().code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(prefill.stats().puts_total, 0u);
  EXPECT_EQ(prefill.stats().bytes_put_total, 0u);
  EXPECT_EQ(prefill.stats().flushes_total, 0u);
  ExpectUntouchedOutside(decode, {});
}

TEST(KvSenderTest, APeerGoneBeforeTheSendIsUnavailable) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 1, 8, true);
  v1::KvDestination dest;
  {
    Group decode(fabric, 1, 10, false);
    dest = decode.Destination({4, 5, 6});
  }  // its transport unregistered the region
  EXPECT_EQ(SendOne(prefill, Ids({1, 2, 3}), dest).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(prefill.stats().puts_total, 0u);
  EXPECT_EQ(prefill.stats().failures_total, 1u);
}

TEST(KvSenderTest, FlushOfPostedPutsReportsTheirBytesOrTheFailure) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 1, 8, true);
  auto decode = std::make_unique<Group>(fabric, 1, 10, false);
  const std::vector<BlockId> src = Ids({1, 2, 3});
  const uint64_t span = 2 * kTotalHeads * kHeadBytes;
  KvSender sender(&prefill.local, std::chrono::milliseconds(5000), 2);
  Results results;

  // Posted layer by layer (as LayerShipper does), then flushed here.
  auto ok = PromptKvTransfer::Connect(prefill.local, decode->Destination({4, 5, 6}));
  ASSERT_TRUE(ok.ok()) << ok.status();
  for (int64_t layer = 0; layer < kLayers; ++layer) ASSERT_TRUE((*ok)->PutLayer(0, layer, src).ok());
  sender.Flush(*std::move(ok), 3, results.Callback());
  ASSERT_TRUE(results.WaitFor(1));
  ASSERT_TRUE(results.Get()[0].ok()) << results.Get()[0].status();
  EXPECT_EQ(results.Get()[0]->bytes, kLayers * 3 * span);
  EXPECT_EQ(results.Get()[0]->num_blocks, 3u);

  // A transfer stopped mid-way (the caller gave up): its error, no flush.
  auto stopped = PromptKvTransfer::Connect(prefill.local, decode->Destination({7, 8, 9}));
  ASSERT_TRUE(stopped.ok());
  ASSERT_TRUE((*stopped)->PutLayer(0, 0, src).ok());
  (*stopped)->Stop(0, absl::CancelledError("caller gone"));
  sender.Flush(*std::move(stopped), 3, results.Callback());
  ASSERT_TRUE(results.WaitFor(2));
  EXPECT_EQ(results.Get()[1].status().code(), absl::StatusCode::kCancelled);

  // The peer goes after the puts were posted: the flush says so.
  auto orphan = PromptKvTransfer::Connect(prefill.local, decode->Destination({0, 1, 2}));
  ASSERT_TRUE(orphan.ok());
  for (int64_t layer = 0; layer < kLayers; ++layer) ASSERT_TRUE((*orphan)->PutLayer(0, layer, src).ok());
  decode.reset();
  sender.Flush(*std::move(orphan), 3, results.Callback());
  ASSERT_TRUE(results.WaitFor(3));
  EXPECT_EQ(results.Get()[2].status().code(), absl::StatusCode::kUnavailable);

  const TransportStats s = prefill.stats();
  EXPECT_EQ(s.puts_total, static_cast<uint64_t>(kLayers + 1 + kLayers));
  EXPECT_EQ(s.flushes_total, 1u);
  EXPECT_EQ(results.Get().size(), 3u);
}

TEST(KvSenderTest, ConcurrentSendsAllLandAndQueuedOnesFinishBeforeTheSenderGoes) {
  auto fabric = std::make_shared<LoopbackFabric>();
  Group prefill(fabric, 1, 8, true), decode(fabric, 1, 64, false);
  constexpr int kThreads = 4, kEach = 8;
  Results results;
  {
    KvSender sender(&prefill.local, std::chrono::milliseconds(5000), 2);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          const uint32_t d = static_cast<uint32_t>(2 * (t * kEach + i) % 64);
          sender.Send(Ids({static_cast<int32_t>(i % 8)}), decode.Destination({d}), results.Callback());
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }  // the destructor runs every queued transfer first
  const std::vector<absl::StatusOr<SendResult>> all = results.Get();
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
  for (const auto& r : all) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->num_blocks, 1u);
  }
  const uint64_t span = 2 * kTotalHeads * kHeadBytes;
  EXPECT_EQ(prefill.stats().puts_total, static_cast<uint64_t>(kThreads * kEach * kLayers));
  EXPECT_EQ(prefill.stats().bytes_put_total, kThreads * kEach * kLayers * span);
  EXPECT_EQ(prefill.stats().flushes_total, static_cast<uint64_t>(kThreads * kEach));
}

}  // namespace
}  // namespace tandem
