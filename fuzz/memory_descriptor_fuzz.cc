// Fuzz target: MemoryDescriptor::Deserialize (the KV region descriptor a
// decode worker hands a prefill worker). Input: a mode byte, then the
// descriptor bytes; with an odd mode byte the trailing 8-byte checksum is
// recomputed first, so the fuzzer reaches the checks behind it.
// Asserts: no crash on any bytes; refusals are InvalidArgument; anything
// that parses Serializes back to exactly the same bytes, has a non-empty
// worker address and rkey within kMaxFieldBytes, a non-empty region that
// does not wrap, and re-parses to an equal descriptor.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "fuzz/fuzz_util.h"
#include "kv_transfer/memory_descriptor.h"


extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::fuzz::ByteReader in(tandem::fuzz::AsView(data, size));
  const bool fix_checksum = (in.U8() & 1) != 0;
  std::string bytes(in.Rest());
  if (fix_checksum && bytes.size() >= 8) {
    const uint64_t sum = tandem::DescriptorChecksum(std::string_view(bytes).substr(0, bytes.size() - 8));
    for (int i = 0; i < 8; ++i) bytes[bytes.size() - 8 + i] = static_cast<char>((sum >> (8 * i)) & 0xff);
  }
  absl::StatusOr<tandem::MemoryDescriptor> d = tandem::MemoryDescriptor::Deserialize(bytes);
  if (!d.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(d.status()), d.status().ToString());
    return 0;
  }
  FUZZ_CHECK(d->Serialize() == bytes, "Serialize(Deserialize(b)) != b");
  FUZZ_CHECK(!d->worker_address.empty() && d->worker_address.size() <= tandem::MemoryDescriptor::kMaxFieldBytes,
             "worker address size");
  FUZZ_CHECK(d->rkey.size() <= tandem::MemoryDescriptor::kMaxFieldBytes, "rkey size");
  FUZZ_CHECK(d->length > 0 && d->base_address <= std::numeric_limits<uint64_t>::max() - d->length, "region");
  FUZZ_CHECK(d->transport == tandem::TransportKind::kLoopback || d->transport == tandem::TransportKind::kUcx,
             "transport kind");
  absl::StatusOr<tandem::MemoryDescriptor> again = tandem::MemoryDescriptor::Deserialize(d->Serialize());
  FUZZ_CHECK(again.ok() && *again == *d, "re-parse differs");
  return 0;
}
