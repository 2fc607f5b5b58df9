// MemoryDescriptor: the bytes one worker hands another so the other can write
// into its registered KV pool (docs/architecture.md, "Services and wire formats": the
// decode worker's KvDestination carries these bytes, opaque to the router).
//
// A descriptor names the owner's transport endpoint (a UCX worker address, or
// a loopback registry handle), the packed remote key of the region, and the
// region's base address and length in the owner's address space.
//
// Wire format, version 1 (all integers little-endian):
//
//   offset    size  field
//   0         4     magic "TKVD"
//   4         2     version (1)
//   6         1     transport kind (1 = loopback, 2 = UCX)
//   7         1     reserved, must be 0
//   8         8     base_address
//   16        8     length (bytes, > 0; base_address + length must not wrap)
//   24        4     W = worker_address size (1 .. kMaxFieldBytes)
//   28        4     R = rkey size (0 .. kMaxFieldBytes)
//   32        W     worker_address
//   32+W      R     rkey
//   32+W+R    8     FNV-1a 64 of every preceding byte
//
// The total must be exactly 40 + W + R bytes. Deserialize() rejects anything
// else with InvalidArgument and never crashes on any input. The checksum
// guards against corruption only: descriptors come from trusted peers over
// the internal API, and the UCX address inside is opaque to this code.
// Thread-safety: a plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tandem {

// Which transport produced a descriptor; a transport accepts only its own.
enum class TransportKind : uint8_t {
  kLoopback = 1,
  kUcx = 2,
};

const char* TransportKindName(TransportKind kind);

struct MemoryDescriptor {
  static constexpr uint16_t kVersion = 1;
  static constexpr uint32_t kMaxFieldBytes = 64 * 1024;
  static constexpr size_t kHeaderBytes = 32;
  static constexpr size_t kChecksumBytes = 8;

  TransportKind transport = TransportKind::kUcx;
  // The owner's endpoint: UCX worker address bytes, or the loopback handle.
  std::string worker_address;
  // The region's packed remote key (ucp_rkey_pack output); empty for loopback.
  std::string rkey;
  // The region in the owner's address space.
  uint64_t base_address = 0;
  uint64_t length = 0;

  // The version-1 wire bytes (binary; hex-encode for text channels).
  std::string Serialize() const;

  // Parses and validates bytes produced by Serialize(). Any malformed input
  // (short, long, bad magic/version/kind/reserved byte, oversized fields,
  // empty worker address, zero or wrapping region, checksum mismatch) gives
  // InvalidArgument.
  static absl::StatusOr<MemoryDescriptor> Deserialize(std::string_view bytes);

  friend bool operator==(const MemoryDescriptor&, const MemoryDescriptor&) = default;
};

// The wire format's checksum (FNV-1a 64) of `bytes`: the last 8 bytes of a
// serialized descriptor hold it over everything before them.
uint64_t DescriptorChecksum(std::string_view bytes);

}  // namespace tandem
