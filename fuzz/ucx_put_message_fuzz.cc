// Fuzz target: the UCX message-put handler's checks (ApplyPutMessage in
// kv_transfer/ucx/ucx_message_puts.h: what a decode worker does with a put
// message from the wire), without a UCX peer. Input: a flags byte (guard
// on, rendezvous), the region size, the guard's grants, the header length
// and header bytes, the payload length, then payload bytes.
// Asserts: a put is applied only when its header is a whole AmPutHeader on
// an eager message, its length equals the payload's, its range lies inside
// the region and, with a guard, every block it touches is granted to its
// token; applied bytes land exactly at [offset, offset + length) (ASan
// watches the region, which is exactly its size); refused puts are counted
// and the refusal table never grows past kMaxRejectionEntries.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/ids.h"
#include "fuzz/fuzz_util.h"
#include "kv_transfer/kv_put_guard.h"
#include "kv_transfer/ucx/ucx_message_puts.h"

using tandem::ucx_internal::AmPutHeader;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::fuzz::ByteReader in(tandem::fuzz::AsView(data, size));
  const uint8_t flags = in.U8();
  const bool guarded = (flags & 1) != 0;
  const bool rendezvous = (flags & 2) != 0;
  // The region: layers x blocks x span, at most 4 x 8 x 64 bytes.
  tandem::KvRegionLayout layout{1 + in.U8() % 4, 1 + in.U8() % 8, 1 + in.U8() % 64, 1};
  std::vector<uint8_t> region(layout.total_bytes());
  tandem::ucx_internal::MessagePutState state;
  state.base = region.data();
  state.length = region.size();
  auto owners = std::make_shared<tandem::KvBlockOwners>(layout.num_blocks);
  std::vector<uint64_t> owner(static_cast<size_t>(layout.num_blocks), 0);
  if (guarded) {
    for (int64_t b = 0; b < layout.num_blocks; ++b) {
      owner[b] = in.U8() % 3;
      const tandem::BlockId id(static_cast<int32_t>(b));
      owners->Grant(owner[b], {&id, 1});
    }
    state.guard = {owners, layout};
  }
  const size_t header_length = in.U8() % 32;
  const std::string header(in.Bytes(header_length));
  const size_t payload_length = in.U16() % 1024;
  std::string payload(in.Bytes(payload_length));
  payload.resize(payload_length, '\x5a');

  AmPutHeader h{};
  if (header.size() == sizeof(h)) std::memcpy(&h, header.data(), sizeof(h));
  const std::vector<uint8_t> before = region;
  const bool applied = tandem::ucx_internal::ApplyPutMessage(&state, nullptr, header.data(), header.size(),
                                                             payload.data(), payload.size(), rendezvous);
  if (applied) {
    FUZZ_CHECK(header.size() == sizeof(h) && !rendezvous && h.length == payload.size(), "malformed put applied");
    FUZZ_CHECK(h.remote_offset <= region.size() && h.length <= region.size() - h.remote_offset, "put outside the region");
    if (guarded) {
      FUZZ_CHECK(h.put_token != 0 && h.length > 0, "guarded put without a token");
      const uint64_t layer_bytes = layout.layer_bytes();
      const uint64_t within = h.remote_offset % layer_bytes;
      FUZZ_CHECK(within + h.length <= layer_bytes, "guarded put across layers");
      for (uint64_t b = within / layout.block_span_bytes; b <= (within + h.length - 1) / layout.block_span_bytes; ++b) {
        FUZZ_CHECK(owner[b] == h.put_token, "put into a block not granted to its token");
      }
    }
    for (size_t i = 0; i < region.size(); ++i) {
      const bool inside = i >= h.remote_offset && i - h.remote_offset < h.length;
      FUZZ_CHECK(region[i] == (inside ? static_cast<uint8_t>(payload[i - h.remote_offset]) : before[i]),
                 "bytes landed outside the put's range");
    }
  } else {
    FUZZ_CHECK(region == before, "a refused put wrote");
    FUZZ_CHECK(!state.rejected.empty(), "a refused put was not counted");
  }
  FUZZ_CHECK(state.rejected.size() <= tandem::ucx_internal::kMaxRejectionEntries, "refusal table unbounded");
  return 0;
}
