// KvRegionLayout and PutLayerBlocks: from (layer, block) to byte ranges in a
// registered KV pool, and the per-layer block shipping the prefill worker
// does as soon as a layer is computed.
//
// The layout mirrors engine/model/kv_cache.h without depending on the engine
// (kv_transfer uses only common/): one allocation, layer-major, one block's
// K+V of one layer contiguous at layer * layer_bytes + block * block_span_bytes;
// inside a span, the rank's K heads come first, then its V heads, each head
// one equal piece (block_size x head_dim elements). Source and destination
// pools may hold different block counts but must agree on layers and, for
// whole-span puts, span size; head-slice puts need only equal head pieces.
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
  int64_t num_kv_heads = 1;      // KV heads in a span (this rank's share)

  // One head's K (or V) of one block: the unit a head-slice put moves.
  int64_t head_bytes() const { return block_span_bytes / (2 * num_kv_heads); }

  uint64_t layer_bytes() const {
    return static_cast<uint64_t>(num_blocks) * static_cast<uint64_t>(block_span_bytes);
  }
  uint64_t total_bytes() const { return static_cast<uint64_t>(num_layers) * layer_bytes(); }
  // Precondition: layer and block in range (Validate() the ids first).
  uint64_t SpanOffset(int64_t layer, BlockId block) const {
    return static_cast<uint64_t>(layer) * layer_bytes() +
           static_cast<uint64_t>(block.value()) * static_cast<uint64_t>(block_span_bytes);
  }
  // InvalidArgument unless every count is positive and the span splits
  // into 2 * num_kv_heads equal pieces.
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

// Posts heads [src_head, src_head + num_heads) of layer `layer` of local
// blocks src[i] into heads [dst_head, dst_head + num_heads) of remote blocks
// dst[i] (head indices within each rank's own range): one put for the K
// heads and one for the V heads of each block pair. When the slice is the
// whole span on both sides it is PutLayerBlocks (consecutive blocks merged).
// Everything is checked first (layers and head pieces agree, head ranges and
// block ids in range) with InvalidArgument and nothing posted.
// Returns the number of puts posted, or the first put error. Does not flush.
absl::StatusOr<int> PutLayerHeads(TransferSession& session, const KvRegionLayout& local,
                                  const KvRegionLayout& remote, int64_t layer, std::span<const BlockId> src,
                                  std::span<const BlockId> dst, int64_t src_head, int64_t dst_head,
                                  int64_t num_heads);

}  // namespace tandem
