// MemoryDescriptor wire encoding (see memory_descriptor.h for the layout).
// Thread-safety: stateless functions.
#include "kv_transfer/memory_descriptor.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

constexpr char kMagic[4] = {'T', 'K', 'V', 'D'};

void PutLe(std::string& out, uint64_t value, int num_bytes) {
  for (int i = 0; i < num_bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// Caller has checked that `bytes` holds at least offset + num_bytes bytes.
uint64_t GetLe(std::string_view bytes, size_t offset, int num_bytes) {
  uint64_t value = 0;
  for (int i = 0; i < num_bytes; ++i) {
    value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
  }
  return value;
}

absl::Status Malformed(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed KV memory descriptor: ", why));
}

}  // namespace

const char* TransportKindName(TransportKind kind) {
  switch (kind) {
    case TransportKind::kLoopback:
      return "loopback";
    case TransportKind::kUcx:
      return "ucx";
  }
  return "unknown";
}

uint64_t DescriptorChecksum(std::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ULL;  // FNV-1a 64
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string MemoryDescriptor::Serialize() const {
  std::string out;
  out.reserve(kHeaderBytes + worker_address.size() + rkey.size() + kChecksumBytes);
  out.append(kMagic, sizeof(kMagic));
  PutLe(out, kVersion, 2);
  PutLe(out, static_cast<uint8_t>(transport), 1);
  PutLe(out, 0, 1);
  PutLe(out, base_address, 8);
  PutLe(out, length, 8);
  PutLe(out, worker_address.size(), 4);
  PutLe(out, rkey.size(), 4);
  out.append(worker_address);
  out.append(rkey);
  PutLe(out, DescriptorChecksum(out), 8);
  return out;
}

absl::StatusOr<MemoryDescriptor> MemoryDescriptor::Deserialize(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes + kChecksumBytes) {
    return Malformed(absl::StrCat(bytes.size(), " bytes is shorter than the fixed part"));
  }
  if (bytes.substr(0, 4) != std::string_view(kMagic, 4)) return Malformed("bad magic");
  const uint64_t version = GetLe(bytes, 4, 2);
  if (version != kVersion) {
    return Malformed(absl::StrCat("unsupported version ", version, " (want ", kVersion, ")"));
  }
  const uint64_t kind = GetLe(bytes, 6, 1);
  if (kind != static_cast<uint8_t>(TransportKind::kLoopback) &&
      kind != static_cast<uint8_t>(TransportKind::kUcx)) {
    return Malformed(absl::StrCat("unknown transport kind ", kind));
  }
  if (GetLe(bytes, 7, 1) != 0) return Malformed("reserved byte is not zero");
  const uint64_t base_address = GetLe(bytes, 8, 8);
  const uint64_t length = GetLe(bytes, 16, 8);
  const uint64_t address_bytes = GetLe(bytes, 24, 4);
  const uint64_t rkey_bytes = GetLe(bytes, 28, 4);
  if (address_bytes == 0 || address_bytes > kMaxFieldBytes) {
    return Malformed(absl::StrCat("worker address size ", address_bytes, " out of range"));
  }
  if (rkey_bytes > kMaxFieldBytes) return Malformed(absl::StrCat("rkey size ", rkey_bytes, " out of range"));
  // Both sizes are bounded above, so this sum cannot overflow.
  const uint64_t expected = kHeaderBytes + address_bytes + rkey_bytes + kChecksumBytes;
  if (bytes.size() != expected) {
    return Malformed(absl::StrCat(bytes.size(), " bytes, expected ", expected));
  }
  const size_t body = bytes.size() - kChecksumBytes;
  if (GetLe(bytes, body, 8) != DescriptorChecksum(bytes.substr(0, body))) return Malformed("checksum mismatch");
  if (length == 0) return Malformed("empty region");
  if (base_address > std::numeric_limits<uint64_t>::max() - length) {
    return Malformed("region wraps the address space");
  }
  MemoryDescriptor d;
  d.transport = static_cast<TransportKind>(kind);
  d.base_address = base_address;
  d.length = length;
  d.worker_address = std::string(bytes.substr(kHeaderBytes, address_bytes));
  d.rkey = std::string(bytes.substr(kHeaderBytes + address_bytes, rkey_bytes));
  return d;
}

}  // namespace tandem
