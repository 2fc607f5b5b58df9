// Fuzz target: KvBlockOwners::WriteIfGranted, the decode side's check that
// a KV put lands only in blocks granted to the put's token
// (kv_transfer/kv_put_guard.h). Input: a region layout (small values, or
// any 64-bit values with the mode bit), an owner table with grants, then
// puts of (token, offset, length).
// Asserts, for every put: the write runs iff WriteIfGranted returns true;
// it runs only for a valid layout (positive counts, total size without
// overflow) and a range inside [0, total_bytes) and inside one layer whose
// every touched block is granted to that non-zero token; for a valid layout
// it runs whenever those hold (the contract is "iff"). Writes go into a
// buffer of exactly total_bytes when that is small, so ASan sees any stray
// byte. Revoke leaves blocks unowned.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/ids.h"
#include "fuzz/fuzz_util.h"
#include "kv_transfer/block_layout.h"
#include "kv_transfer/kv_put_guard.h"

namespace {

// Whether `layout` is one WriteIfGranted may write through: positive counts
// and a total size that fits 64 bits.
bool Sane(const tandem::KvRegionLayout& l, uint64_t* total) {
  if (l.num_layers <= 0 || l.num_blocks <= 0 || l.block_span_bytes <= 0) return false;
  uint64_t layer = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(l.num_blocks), static_cast<uint64_t>(l.block_span_bytes), &layer)) {
    return false;
  }
  return !__builtin_mul_overflow(static_cast<uint64_t>(l.num_layers), layer, total);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::fuzz::ByteReader in(tandem::fuzz::AsView(data, size));
  const bool wide = (in.U8() & 1) != 0;
  tandem::KvRegionLayout layout;
  if (wide) {
    layout.num_layers = static_cast<int64_t>(in.U64());
    layout.num_blocks = static_cast<int64_t>(in.U64());
    layout.block_span_bytes = static_cast<int64_t>(in.U64());
  } else {
    layout.num_layers = static_cast<int64_t>(in.U8() % 6) - 1;
    layout.num_blocks = static_cast<int64_t>(in.U8() % 12) - 1;
    layout.block_span_bytes = static_cast<int64_t>(in.U8() % 65) - 1;
  }
  layout.num_kv_heads = 1;
  const int64_t table_blocks = static_cast<int64_t>(in.U8() % 16) - 1;
  tandem::KvBlockOwners owners(table_blocks);
  std::vector<uint64_t> owner(static_cast<size_t>(owners.num_blocks()), tandem::KvBlockOwners::kNoToken);
  for (int g = in.U8() % 8; g > 0; --g) {
    const uint64_t token = in.U8() % 4;
    const int64_t block = static_cast<int64_t>(in.U8() % 20) - 2;
    const tandem::BlockId id(static_cast<int32_t>(block));
    owners.Grant(token, {&id, 1});
    if (block >= 0 && block < static_cast<int64_t>(owner.size())) owner[block] = token;
  }
  uint64_t total = 0;
  const bool sane = Sane(layout, &total);
  std::vector<uint8_t> region(sane && total <= (1u << 16) ? total : 0);
  const uint64_t layer_bytes = sane ? total / static_cast<uint64_t>(layout.num_layers) : 0;

  for (int p = 0; p < 16 && !in.empty(); ++p) {
    const uint64_t token = in.U8() % 4;
    const uint8_t kind = in.U8();
    const uint64_t offset = (kind & 1) ? in.U64() : in.U16() % 4096;
    const uint64_t length = (kind & 2) ? in.U64() : in.U16() % 1024;
    bool wrote = false;
    const bool granted = owners.WriteIfGranted(layout, token, offset, length, [&] {
      wrote = true;
      if (!region.empty()) std::memset(region.data() + offset, 0xab, length);
    });
    FUZZ_CHECK(wrote == granted, "write ran iff granted");
    bool expected = sane && token != tandem::KvBlockOwners::kNoToken && length > 0 && offset < total &&
                    length <= total - offset;
    if (expected) {
      const uint64_t within = offset % layer_bytes;
      expected = length <= layer_bytes - within;  // inside one layer
      const uint64_t span = static_cast<uint64_t>(layout.block_span_bytes);
      for (uint64_t b = within / span; expected && b <= (within + length - 1) / span; ++b) {
        expected = b < owner.size() && owner[b] == token;
      }
    }
    if (granted) FUZZ_CHECK(expected, "a put outside the region, across layers, or into blocks not granted");
    if (sane) FUZZ_CHECK(granted == expected, "a put into granted blocks of a valid layout was refused");
  }
  for (size_t b = 0; b < owner.size(); ++b) {
    const tandem::BlockId id(static_cast<int32_t>(b));
    FUZZ_CHECK(owners.owner(id) == owner[b], "owner table differs");
    owners.Revoke({&id, 1});
    FUZZ_CHECK(owners.owner(id) == tandem::KvBlockOwners::kNoToken, "revoked block still owned");
  }
  return 0;
}
