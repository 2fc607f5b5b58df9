// UcxTransport in one process: two transports (two ucp workers) exchange
// exact bytes over each transport family this machine has (TCP loopback;
// shared memory + CMA), block-sized puts included.
#include "kv_transfer/ucx/ucx_transport.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_transfer/block_layout.h"
#include "kv_transfer/kv_put_guard.h"
#include "kv_transfer/loopback/loopback_transport.h"
#include "tests/unit/kv_transfer/test_pattern.h"

namespace tandem {
namespace {

using kv_transfer_test::PatternByte;

constexpr absl::Duration kFlushTimeout = absl::Seconds(5);

// `param`: a UCX_TLS list, optionally "+rma" or "+messages" to force a put mode.
std::unique_ptr<UcxTransport> MakeTransport(const std::string& param) {
  UcxTransportOptions options;
  const size_t plus = param.find('+');
  options.tls = param.substr(0, plus);
  if (plus != std::string::npos) {
    options.put_mode = param.substr(plus + 1) == "rma" ? UcxTransportOptions::PutMode::kRma
                                                       : UcxTransportOptions::PutMode::kMessages;
  }
  auto transport = UcxTransport::Create(options);
  EXPECT_TRUE(transport.ok()) << transport.status();
  return transport.ok() ? std::move(*transport) : nullptr;
}

// 64-byte aligned, like KvCache's pool.
struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) : size(n), data(static_cast<uint8_t*>(std::aligned_alloc(64, n))) {
    std::memset(data, 0, n);
  }
  ~AlignedBuffer() { std::free(data); }
  size_t size;
  uint8_t* data;
};

class UcxTransportTest : public ::testing::TestWithParam<std::string> {};

TEST_P(UcxTransportTest, PutFlushMovesExactBytes) {
  auto prefill = MakeTransport(GetParam());
  auto decode = MakeTransport(GetParam());
  ASSERT_NE(prefill, nullptr);
  ASSERT_NE(decode, nullptr);
  AlignedBuffer src(1 << 20);
  AlignedBuffer dst(1 << 20);
  for (size_t i = 0; i < src.size; ++i) src.data[i] = PatternByte(1, i);
  ASSERT_TRUE(prefill->RegisterMemory(src.data, src.size).ok());
  auto remote = decode->RegisterMemory(dst.data, dst.size);
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_EQ(remote->transport, TransportKind::kUcx);
  // Message mode exposes no rkey: nothing but the checked handler writes the region.
  EXPECT_EQ(remote->rkey.empty(), decode->uses_message_puts());

  auto parsed = MemoryDescriptor::Deserialize(remote->Serialize());
  ASSERT_TRUE(parsed.ok());
  auto session = prefill->Connect(*parsed);
  ASSERT_TRUE(session.ok()) << session.status();
  // One whole-region put, then a small overlapping rewrite at an offset.
  ASSERT_TRUE((*session)->Put(0, 0, src.size).ok());
  ASSERT_TRUE((*session)->Flush(kFlushTimeout).ok());
  EXPECT_EQ(std::memcmp(src.data, dst.data, src.size), 0);
  ASSERT_TRUE((*session)->Put(100, 7, 33).ok());
  absl::Status flushed = (*session)->Flush(kFlushTimeout);
  ASSERT_TRUE(flushed.ok()) << flushed;
  for (size_t i = 0; i < 33; ++i) ASSERT_EQ(dst.data[7 + i], src.data[100 + i]) << i;
  EXPECT_EQ((*session)->bytes_put(), src.size + 33);
  const TransportStats stats = prefill->stats();
  EXPECT_EQ(stats.bytes_put_total, src.size + 33);
  EXPECT_EQ(stats.puts_total, 2u);
  EXPECT_EQ(stats.flushes_total, 2u);
  EXPECT_EQ(stats.failures_total, 0u);
}

TEST_P(UcxTransportTest, ManyBlockSizedPutsLandInTheirBlocks) {
  auto prefill = MakeTransport(GetParam());
  auto decode = MakeTransport(GetParam());
  ASSERT_NE(prefill, nullptr);
  ASSERT_NE(decode, nullptr);
  // 4 layers x 64 blocks x 8 KiB spans on each side (2 MiB pools).
  const KvRegionLayout layout{.num_layers = 4, .num_blocks = 64, .block_span_bytes = 8192};
  AlignedBuffer src(layout.total_bytes());
  AlignedBuffer dst(layout.total_bytes());
  for (size_t i = 0; i < src.size; ++i) src.data[i] = PatternByte(2, i);
  ASSERT_TRUE(prefill->RegisterMemory(src.data, src.size).ok());
  auto remote = decode->RegisterMemory(dst.data, dst.size);
  ASSERT_TRUE(remote.ok());
  auto session = prefill->Connect(*remote);
  ASSERT_TRUE(session.ok()) << session.status();

  // Scattered source blocks into a scattered destination: 40 blocks, source
  // b -> destination (b * 17 + 3) % 64, one put per block per layer.
  std::vector<BlockId> from;
  std::vector<BlockId> to;
  for (int b = 0; b < 40; ++b) {
    from.push_back(BlockId(b));
    to.push_back(BlockId((b * 17 + 3) % 64));
  }
  for (int64_t layer = 0; layer < layout.num_layers; ++layer) {
    auto puts = PutLayerBlocks(**session, layout, layout, layer, from, to);
    ASSERT_TRUE(puts.ok()) << puts.status();
    EXPECT_EQ(*puts, 40);
  }
  absl::Status flushed = (*session)->Flush(kFlushTimeout);
  ASSERT_TRUE(flushed.ok()) << flushed;

  std::vector<uint8_t> expected(dst.size, 0);
  for (int64_t layer = 0; layer < layout.num_layers; ++layer) {
    for (size_t i = 0; i < from.size(); ++i) {
      std::memcpy(expected.data() + layout.SpanOffset(layer, to[i]),
                  src.data + layout.SpanOffset(layer, from[i]), layout.block_span_bytes);
    }
  }
  EXPECT_EQ(std::memcmp(expected.data(), dst.data, dst.size), 0);
  EXPECT_EQ(prefill->stats().puts_total, 160u);
  EXPECT_EQ(prefill->stats().bytes_put_total, 160u * 8192u);
}

TEST_P(UcxTransportTest, CachesOneEndpointPerPeerAndChecksArguments) {
  auto prefill = MakeTransport(GetParam());
  auto decode = MakeTransport(GetParam());
  ASSERT_NE(prefill, nullptr);
  ASSERT_NE(decode, nullptr);
  AlignedBuffer src(4096);
  AlignedBuffer dst(8192);
  auto remote = decode->RegisterMemory(dst.data, dst.size);
  ASSERT_TRUE(remote.ok());
  EXPECT_EQ(prefill->Connect(*remote).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(prefill->local_descriptor().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(prefill->RegisterMemory(src.data, src.size).ok());
  EXPECT_EQ(prefill->RegisterMemory(src.data, src.size).status().code(),
            absl::StatusCode::kFailedPrecondition);

  auto first = prefill->Connect(*remote);
  auto second = prefill->Connect(*remote);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(prefill->num_cached_peers(), 1u);

  EXPECT_EQ((*first)->Put(4096, 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*first)->Put(0, 8192, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*first)->Put(1, 0, UINT64_MAX).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*first)->Put(0, UINT64_MAX, 2).code(), absl::StatusCode::kInvalidArgument);
  for (size_t i = 0; i < src.size; ++i) src.data[i] = PatternByte(3, i);
  ASSERT_TRUE((*first)->Put(0, 4096, 4096).ok());
  ASSERT_TRUE((*second)->Put(0, 0, 10).ok());
  ASSERT_TRUE((*first)->Flush(kFlushTimeout).ok());
  ASSERT_TRUE((*second)->Flush(kFlushTimeout).ok());
  EXPECT_EQ(std::memcmp(dst.data + 4096, src.data, 4096), 0);
  EXPECT_EQ(std::memcmp(dst.data, src.data, 10), 0);

  // Descriptors of another transport kind are refused.
  LoopbackTransport loopback(std::make_shared<LoopbackFabric>());
  auto foreign = loopback.RegisterMemory(dst.data, dst.size);
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ(prefill->Connect(*foreign).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(UcxTransportTest, ConnectsToItself) {
  auto transport = MakeTransport(GetParam());
  ASSERT_NE(transport, nullptr);
  AlignedBuffer buffer(8192);
  for (size_t i = 0; i < 4096; ++i) buffer.data[i] = PatternByte(4, i);
  auto self = transport->RegisterMemory(buffer.data, buffer.size);
  ASSERT_TRUE(self.ok());
  auto session = transport->Connect(*self);
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE((*session)->Put(0, 4096, 4096).ok());
  ASSERT_TRUE((*session)->Flush(kFlushTimeout).ok());
  EXPECT_EQ(std::memcmp(buffer.data, buffer.data + 4096, 4096), 0);
}

// A guarded target (kv_put_guard.h) over each transport family: message
// puts are checked per put token, so a stale reservation's puts are refused
// (its flush fails with FailedPrecondition) while another token's puts on the
// same cached endpoint land and flush OK; RMA puts cannot be checked, and
// GuardPuts says so.
TEST_P(UcxTransportTest, GuardedTargetRefusesStaleTokensPerSessionOnOneEndpoint) {
  auto prefill = MakeTransport(GetParam());
  auto decode = MakeTransport(GetParam());
  ASSERT_NE(prefill, nullptr);
  ASSERT_NE(decode, nullptr);
  const KvRegionLayout layout{.num_layers = 2, .num_blocks = 8, .block_span_bytes = 4096};
  AlignedBuffer src(layout.total_bytes());
  AlignedBuffer dst(layout.total_bytes());
  for (size_t i = 0; i < src.size; ++i) src.data[i] = PatternByte(4, i);
  ASSERT_TRUE(prefill->RegisterMemory(src.data, src.size).ok());
  auto remote = decode->RegisterMemory(dst.data, dst.size);
  ASSERT_TRUE(remote.ok());
  auto owners = std::make_shared<KvBlockOwners>(layout.num_blocks);
  const bool guarded = decode->GuardPuts({owners, layout});
  EXPECT_EQ(guarded, decode->uses_message_puts());
  if (!guarded) return;  // RMA: the target's CPU never sees the puts

  const std::vector<BlockId> src_blocks{BlockId(0), BlockId(1)};
  const std::vector<BlockId> dst_blocks{BlockId(3), BlockId(4)};
  owners->Grant(0xA, dst_blocks);
  auto stale = prefill->Connect(*remote, 0xB);  // a reservation whose blocks went to 0xA
  auto fresh = prefill->Connect(*remote, 0xA);
  ASSERT_TRUE(stale.ok() && fresh.ok());
  EXPECT_EQ(prefill->num_cached_peers(), 1u);
  // Interleaved on one endpoint: stale, fresh, stale.
  ASSERT_TRUE(PutLayerBlocks(**stale, layout, layout, 0, std::vector<BlockId>{BlockId(6), BlockId(7)}, dst_blocks).ok());
  for (int64_t layer = 0; layer < layout.num_layers; ++layer) {
    ASSERT_TRUE(PutLayerBlocks(**fresh, layout, layout, layer, src_blocks, dst_blocks).ok());
  }
  ASSERT_TRUE(PutLayerBlocks(**stale, layout, layout, 1, std::vector<BlockId>{BlockId(6), BlockId(7)}, dst_blocks).ok());
  absl::Status fresh_flush = (*fresh)->Flush(kFlushTimeout);
  EXPECT_TRUE(fresh_flush.ok()) << fresh_flush;
  absl::Status stale_flush = (*stale)->Flush(kFlushTimeout);
  EXPECT_EQ(stale_flush.code(), absl::StatusCode::kFailedPrecondition) << stale_flush;
  EXPECT_THAT(std::string(stale_flush.message()), ::testing::HasSubstr("refused 2 puts"));
  EXPECT_EQ(decode->stats().puts_refused_total, 2u);

  std::vector<uint8_t> expected(dst.size, 0);
  for (int64_t layer = 0; layer < layout.num_layers; ++layer) {
    for (size_t i = 0; i < src_blocks.size(); ++i) {
      std::memcpy(expected.data() + layout.SpanOffset(layer, dst_blocks[i]),
                  src.data + layout.SpanOffset(layer, src_blocks[i]), layout.block_span_bytes);
    }
  }
  EXPECT_EQ(std::memcmp(expected.data(), dst.data, dst.size), 0);

  // Revoked (the reservation ended): the same token is refused from now on.
  owners->Revoke(dst_blocks);
  auto late = prefill->Connect(*remote, 0xA);
  ASSERT_TRUE(late.ok());
  ASSERT_TRUE(PutLayerBlocks(**late, layout, layout, 0, std::vector<BlockId>{BlockId(5)}, std::vector<BlockId>{BlockId(3)}).ok());
  EXPECT_EQ((*late)->Flush(kFlushTimeout).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(std::memcmp(expected.data(), dst.data, dst.size), 0);
}

// A worker that forces one-sided puts cannot write into a message-mode
// peer (it has no rkey to write with): a clear InvalidArgument at Connect.
// The other way round works: every worker takes message puts.
TEST(UcxTransportModesTest, OneSidedSendersCannotWriteIntoAMessageModeTarget) {
  auto rma = MakeTransport("sm,self,cma+rma");
  auto messages = MakeTransport("sm,self,cma+messages");
  ASSERT_NE(rma, nullptr);
  ASSERT_NE(messages, nullptr);
  AlignedBuffer a(1 << 16);
  AlignedBuffer b(1 << 16);
  for (size_t i = 0; i < a.size; ++i) a.data[i] = PatternByte(5, i);
  auto rma_desc = rma->RegisterMemory(a.data, a.size);
  auto msg_desc = messages->RegisterMemory(b.data, b.size);
  ASSERT_TRUE(rma_desc.ok() && msg_desc.ok());
  EXPECT_FALSE(rma_desc->rkey.empty());
  EXPECT_TRUE(msg_desc->rkey.empty());
  auto refused = rma->Connect(*MemoryDescriptor::Deserialize(msg_desc->Serialize()));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("--kv-transport ucx"));
  // Message puts into the RMA-mode worker's region land.
  std::vector<uint8_t> src(1 << 16);
  for (size_t i = 0; i < src.size(); ++i) src[i] = PatternByte(6, i);
  std::memcpy(b.data, src.data(), src.size());
  auto session = messages->Connect(*rma_desc);
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE((*session)->Put(0, 0, 4096).ok());
  ASSERT_TRUE((*session)->Flush(kFlushTimeout).ok());
  EXPECT_EQ(std::memcmp(a.data, src.data(), 4096), 0);
}

TEST(UcxTransportOptionsTest, RejectsBadSettingValue) {
  UcxTransportOptions options;
  options.config = {{"KEEPALIVE_INTERVAL", "not-a-duration"}};
  EXPECT_EQ(UcxTransport::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(UcxTransportOptionsTest, MessagePutsExactlyWhereOnlyEmulatedPutsAreAllowed) {
  EXPECT_TRUE(TlsNeedsMessagePuts("tcp"));
  EXPECT_TRUE(TlsNeedsMessagePuts("tcp,self"));
  EXPECT_TRUE(TlsNeedsMessagePuts(" TCP , self "));
  EXPECT_TRUE(TlsNeedsMessagePuts("posix,sysv,self"));
  EXPECT_TRUE(TlsNeedsMessagePuts("ud_v,tcp"));
  EXPECT_FALSE(TlsNeedsMessagePuts(""));  // UCX's own choice
  EXPECT_FALSE(TlsNeedsMessagePuts("sm,self,cma"));
  EXPECT_FALSE(TlsNeedsMessagePuts("tcp,cma"));
  EXPECT_FALSE(TlsNeedsMessagePuts("rc,tcp"));
  EXPECT_FALSE(TlsNeedsMessagePuts("all"));
  EXPECT_FALSE(TlsNeedsMessagePuts("^ib"));
  EXPECT_FALSE(TlsNeedsMessagePuts("sm"));

  // kAuto follows the list; the forced modes ignore it.
  EXPECT_TRUE(MakeTransport("tcp,self")->uses_message_puts());
  EXPECT_FALSE(MakeTransport("sm,self,cma")->uses_message_puts());
  EXPECT_FALSE(MakeTransport("tcp,self+rma")->uses_message_puts());
  EXPECT_TRUE(MakeTransport("sm,self,cma+messages")->uses_message_puts());
  EXPECT_TRUE(MakeTransport("posix,sysv,self")->uses_message_puts());
}

// Tcp: message puts (auto); TcpRma: UCX's emulated RMA; SharedMemory: CMA
// RMA (auto); SharedMemoryNoCma: message puts over posix/sysv shared memory.
INSTANTIATE_TEST_SUITE_P(Transports, UcxTransportTest,
                         ::testing::Values("tcp,self", "tcp,self+rma", "sm,self,cma", "posix,sysv,self"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           const std::string& p = info.param;
                           if (p == "posix,sysv,self") return std::string("SharedMemoryNoCma");
                           std::string name = p.rfind("tcp", 0) == 0 ? "Tcp" : "SharedMemory";
                           if (p.find("+rma") != std::string::npos) name += "Rma";
                           return name;
                         });

}  // namespace
}  // namespace tandem
