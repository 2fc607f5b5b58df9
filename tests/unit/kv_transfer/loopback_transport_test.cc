// LoopbackTransport: exact bytes, range checks, lifecycle errors, and a peer
// that goes away.
#include "kv_transfer/loopback/loopback_transport.h"

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 31 + seed + (i >> 8));
  return v;
}

class LoopbackTransportTest : public ::testing::Test {
 protected:
  std::shared_ptr<LoopbackFabric> fabric_ = std::make_shared<LoopbackFabric>();
  std::vector<uint8_t> src_ = Pattern(4096, 7);
  std::vector<uint8_t> dst_ = std::vector<uint8_t>(8192, 0);
};

TEST_F(LoopbackTransportTest, PutsMoveExactBytes) {
  LoopbackTransport prefill(fabric_);
  LoopbackTransport decode(fabric_);
  ASSERT_TRUE(prefill.RegisterMemory(src_.data(), src_.size()).ok());
  auto remote = decode.RegisterMemory(dst_.data(), dst_.size());
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_EQ(remote->transport, TransportKind::kLoopback);

  // Through the wire format, as the router would carry it.
  auto parsed = MemoryDescriptor::Deserialize(remote->Serialize());
  ASSERT_TRUE(parsed.ok());
  auto session = prefill.Connect(*parsed);
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE((*session)->Put(0, 4096, 1024).ok());
  ASSERT_TRUE((*session)->Put(1024, 100, 3072).ok());
  ASSERT_TRUE((*session)->Put(0, 0, 0).ok());  // no-op
  ASSERT_TRUE((*session)->Flush(absl::Seconds(1)).ok());

  std::vector<uint8_t> expected(8192, 0);
  std::copy(src_.begin(), src_.begin() + 1024, expected.begin() + 4096);
  std::copy(src_.begin() + 1024, src_.end(), expected.begin() + 100);
  EXPECT_EQ(dst_, expected);
  EXPECT_EQ((*session)->bytes_put(), 4096u);
  EXPECT_EQ((*session)->remote_length(), 8192u);
  const TransportStats stats = prefill.stats();
  EXPECT_EQ(stats.bytes_put_total, 4096u);
  EXPECT_EQ(stats.puts_total, 2u);
  EXPECT_EQ(stats.flushes_total, 1u);
  EXPECT_EQ(stats.failures_total, 0u);
}

TEST_F(LoopbackTransportTest, RejectsOutOfRangePutsWithoutTouchingMemory) {
  LoopbackTransport prefill(fabric_);
  LoopbackTransport decode(fabric_);
  ASSERT_TRUE(prefill.RegisterMemory(src_.data(), src_.size()).ok());
  auto remote = decode.RegisterMemory(dst_.data(), dst_.size());
  ASSERT_TRUE(remote.ok());
  auto session = prefill.Connect(*remote);
  ASSERT_TRUE(session.ok());
  struct Case {
    uint64_t local, remote, length;
  };
  for (const Case& c : {Case{4096, 0, 1}, Case{0, 8192, 1}, Case{1, 0, 4096}, Case{0, 4097, 4096},
                        Case{UINT64_MAX, 0, 2}, Case{0, UINT64_MAX - 1, 4},
                        Case{0, 0, UINT64_MAX}, Case{4097, 0, 0}}) {
    absl::Status status = (*session)->Put(c.local, c.remote, c.length);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
        << c.local << " " << c.remote << " " << c.length << ": " << status;
  }
  EXPECT_EQ(dst_, std::vector<uint8_t>(8192, 0));
  EXPECT_EQ(prefill.stats().failures_total, 8u);
  // An argument error does not fail the session.
  EXPECT_TRUE((*session)->Put(4095, 8191, 1).ok());
  EXPECT_EQ(dst_[8191], src_[4095]);
}

TEST_F(LoopbackTransportTest, RegistersOnceAndConnectsOnlyAfterRegistering) {
  LoopbackTransport a(fabric_);
  LoopbackTransport b(fabric_);
  auto remote = b.RegisterMemory(dst_.data(), dst_.size());
  ASSERT_TRUE(remote.ok());
  EXPECT_EQ(a.local_descriptor().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.Connect(*remote).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.RegisterMemory(nullptr, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.RegisterMemory(src_.data(), 0).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(a.RegisterMemory(src_.data(), src_.size()).ok());
  EXPECT_EQ(a.RegisterMemory(src_.data(), src_.size()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto local = a.local_descriptor();
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(local->length, src_.size());
}

TEST_F(LoopbackTransportTest, RejectsForeignDescriptors) {
  LoopbackTransport a(fabric_);
  ASSERT_TRUE(a.RegisterMemory(src_.data(), src_.size()).ok());

  LoopbackTransport other_fabric(std::make_shared<LoopbackFabric>());
  auto foreign = other_fabric.RegisterMemory(dst_.data(), dst_.size());
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ(a.Connect(*foreign).status().code(), absl::StatusCode::kInvalidArgument);

  MemoryDescriptor ucx = *foreign;
  ucx.transport = TransportKind::kUcx;
  EXPECT_EQ(a.Connect(ucx).status().code(), absl::StatusCode::kInvalidArgument);

  LoopbackTransport b(fabric_);
  auto remote = b.RegisterMemory(dst_.data(), dst_.size());
  ASSERT_TRUE(remote.ok());
  MemoryDescriptor lying = *remote;
  lying.length += 1;
  EXPECT_EQ(a.Connect(lying).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LoopbackTransportTest, PeerGoneGivesUnavailable) {
  LoopbackTransport prefill(fabric_);
  ASSERT_TRUE(prefill.RegisterMemory(src_.data(), src_.size()).ok());
  auto decode = std::make_unique<LoopbackTransport>(fabric_);
  auto remote = decode->RegisterMemory(dst_.data(), dst_.size());
  ASSERT_TRUE(remote.ok());
  auto session = prefill.Connect(*remote);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->Put(0, 0, 16).ok());
  decode.reset();
  EXPECT_EQ((*session)->Flush(absl::Seconds(1)).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*session)->Put(0, 0, 16).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(prefill.Connect(*remote).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_GE(prefill.stats().failures_total, 3u);
}

}  // namespace
}  // namespace tandem
