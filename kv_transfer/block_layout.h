// KvRegionLayout and PutLayerBlocks: from (layer, block) to byte ranges in a
// registered KV pool, and the per-layer block shipping the prefill worker
// does as soon as a layer is computed.
//
// The layout mirrors engine/model/kv_cache.h without depending on the engine
// (kv_transfer uses only common/): one allocation, layer-major, one block's
// K+V of one layer contiguous at layer * layer_bytes + block * block_span_bytes.
// Source and destination pools may hold different block counts but must agree
// on layers and span size.
// Thread-safety: plain values and a stateless function (the session passed in
// follows its own rules).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/ids.h"
#include "kv_transfer/transport.h"

namespace tandem {

struct KvRegionLayout {
  int64_t num_layers = 0;
  int64_t num_blocks = 0;
  int64_t block_span_bytes = 0;  // K+V of one block in one layer, this rank

  uint64_t layer_bytes() const {
    return static_cast<uint64_t>(num_blocks) * static_cast<uint64_t>(block_span_bytes);
  }
  uint64_t total_bytes() const { return static_cast<uint64_t>(num_layers) * layer_bytes(); }
  // Precondition: layer and block in range (Validate() the ids first).
  uint64_t SpanOffset(int64_t layer, BlockId block) const {
    return static_cast<uint64_t>(layer) * layer_bytes() +
           static_cast<uint64_t>(block.value()) * static_cast<uint64_t>(block_span_bytes);
  }
  // InvalidArgument unless every count is positive.
  absl::Status Validate() const;
};

// Posts layer `layer` of local blocks src[i] into remote blocks dst[i],
// merging runs that are consecutive on both sides into one put (so a freshly
// allocated, contiguous destination takes a few large puts). Everything is
// checked before anything is posted: mismatched layouts or list sizes and
// out-of-range layers or ids give InvalidArgument with nothing sent.
// Returns the number of puts posted, or the first put error. Does not flush.
absl::StatusOr<int> PutLayerBlocks(TransferSession& session, const KvRegionLayout& local,
                                   const KvRegionLayout& remote, int64_t layer,
                                   std::span<const BlockId> src, std::span<const BlockId> dst);

}  // namespace tandem
