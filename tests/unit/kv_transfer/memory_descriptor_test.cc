// MemoryDescriptor wire format: round trips and every malformed-input case
// (each must give InvalidArgument, never a crash).
#include "kv_transfer/memory_descriptor.h"

#include <cstdint>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace tandem {
namespace {

MemoryDescriptor Sample() {
  MemoryDescriptor d;
  d.transport = TransportKind::kUcx;
  d.worker_address = std::string("\x00\x01worker\xff", 9);
  d.rkey = std::string("rkey\x00\x02", 6);
  d.base_address = 0x7f0012345000ULL;
  d.length = 1 << 20;
  return d;
}

// Rewrites the trailing FNV-1a 64 checksum so a test reaches the check it
// means to exercise.
void Reseal(std::string& bytes) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i + 8 < bytes.size(); ++i) {
    hash ^= static_cast<unsigned char>(bytes[i]);
    hash *= 0x100000001b3ULL;
  }
  for (int i = 0; i < 8; ++i) bytes[bytes.size() - 8 + i] = static_cast<char>((hash >> (8 * i)) & 0xff);
}

void PutLe(std::string& bytes, size_t offset, uint64_t value, int n) {
  for (int i = 0; i < n; ++i) bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

void ExpectInvalid(const std::string& bytes, const std::string& needle) {
  auto parsed = MemoryDescriptor::Deserialize(bytes);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_NE(parsed.status().message().find(needle), std::string::npos) << parsed.status();
}

TEST(MemoryDescriptorTest, RoundTripsEveryField) {
  const MemoryDescriptor d = Sample();
  const std::string bytes = d.Serialize();
  EXPECT_EQ(bytes.size(), 32u + 9u + 6u + 8u);
  EXPECT_EQ(bytes.substr(0, 4), "TKVD");
  auto parsed = MemoryDescriptor::Deserialize(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, d);
}

TEST(MemoryDescriptorTest, RoundTripsLoopbackWithEmptyRkeyAndRegionAtTopOfAddressSpace) {
  MemoryDescriptor d;
  d.transport = TransportKind::kLoopback;
  d.worker_address = std::string(16, '\x07');
  d.length = 4096;
  d.base_address = std::numeric_limits<uint64_t>::max() - 4096;
  auto parsed = MemoryDescriptor::Deserialize(d.Serialize());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, d);
}

TEST(MemoryDescriptorTest, RejectsEveryTruncation) {
  const std::string bytes = Sample().Serialize();
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto parsed = MemoryDescriptor::Deserialize(bytes.substr(0, n));
    ASSERT_FALSE(parsed.ok()) << "prefix of " << n;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(MemoryDescriptorTest, RejectsTrailingBytes) {
  ExpectInvalid(Sample().Serialize() + "x", "expected");
}

TEST(MemoryDescriptorTest, RejectsBadMagic) {
  std::string bytes = Sample().Serialize();
  bytes[0] = 'X';
  ExpectInvalid(bytes, "magic");
}

TEST(MemoryDescriptorTest, RejectsUnknownVersion) {
  std::string bytes = Sample().Serialize();
  PutLe(bytes, 4, 2, 2);
  Reseal(bytes);
  ExpectInvalid(bytes, "version");
}

TEST(MemoryDescriptorTest, RejectsUnknownTransportKind) {
  for (uint64_t kind : {0, 3, 255}) {
    std::string bytes = Sample().Serialize();
    PutLe(bytes, 6, kind, 1);
    Reseal(bytes);
    ExpectInvalid(bytes, "transport kind");
  }
}

TEST(MemoryDescriptorTest, RejectsNonZeroReservedByte) {
  std::string bytes = Sample().Serialize();
  PutLe(bytes, 7, 1, 1);
  Reseal(bytes);
  ExpectInvalid(bytes, "reserved");
}

TEST(MemoryDescriptorTest, RejectsEmptyOrOversizedWorkerAddress) {
  std::string bytes = Sample().Serialize();
  PutLe(bytes, 24, 0, 4);
  ExpectInvalid(bytes, "worker address size");
  PutLe(bytes, 24, MemoryDescriptor::kMaxFieldBytes + 1, 4);
  ExpectInvalid(bytes, "worker address size");
  PutLe(bytes, 24, 0xffffffffULL, 4);
  ExpectInvalid(bytes, "worker address size");
}

TEST(MemoryDescriptorTest, RejectsOversizedRkey) {
  std::string bytes = Sample().Serialize();
  PutLe(bytes, 28, MemoryDescriptor::kMaxFieldBytes + 1, 4);
  ExpectInvalid(bytes, "rkey size");
  PutLe(bytes, 28, 0xffffffffULL, 4);
  ExpectInvalid(bytes, "rkey size");
}

TEST(MemoryDescriptorTest, RejectsFieldSizesThatDisagreeWithTheTotal) {
  std::string bytes = Sample().Serialize();
  PutLe(bytes, 24, 10, 4);  // one more than present
  ExpectInvalid(bytes, "expected");
  PutLe(bytes, 24, 9, 4);
  PutLe(bytes, 28, 5, 4);  // one fewer than present
  ExpectInvalid(bytes, "expected");
}

TEST(MemoryDescriptorTest, RejectsCorruptedBytes) {
  const std::string good = Sample().Serialize();
  // Flip one bit in every byte of the address, rkey, addresses and checksum.
  for (size_t i = 8; i < good.size(); ++i) {
    if (i >= 24 && i < 32) continue;  // size fields: covered above
    std::string bytes = good;
    bytes[i] = static_cast<char>(bytes[i] ^ 0x10);
    auto parsed = MemoryDescriptor::Deserialize(bytes);
    ASSERT_FALSE(parsed.ok()) << "flipped byte " << i;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(MemoryDescriptorTest, RejectsEmptyRegion) {
  MemoryDescriptor d = Sample();
  d.length = 0;
  ExpectInvalid(d.Serialize(), "empty region");
}

TEST(MemoryDescriptorTest, RejectsRegionThatWraps) {
  MemoryDescriptor d = Sample();
  d.base_address = std::numeric_limits<uint64_t>::max() - 10;
  d.length = 11;
  ExpectInvalid(d.Serialize(), "wraps");
}

TEST(MemoryDescriptorTest, SurvivesArbitraryBytes) {
  // A cheap deterministic fuzz: random lengths and contents, plus a valid
  // header followed by garbage. Only statuses may come out.
  uint64_t state = 12345;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const std::string good = Sample().Serialize();
  for (int trial = 0; trial < 20000; ++trial) {
    std::string bytes(next() % 96, '\0');
    for (char& c : bytes) c = static_cast<char>(next());
    if (trial % 2 == 0 && bytes.size() >= 8) bytes.replace(0, 8, good.substr(0, 8));
    auto parsed = MemoryDescriptor::Deserialize(bytes);
    EXPECT_FALSE(parsed.ok());
  }
}

}  // namespace
}  // namespace tandem
