// KV-head routing between tensor-parallel groups of different sizes: which
// source rank sends which of its KV heads to which destination rank.
//
// Each rank of a TP group holds a contiguous range of the model's KV heads
// (engine/model/tp_shard.h: an even split, or one replicated head per rank
// when the group is larger than the head count). Moving a prompt's KV from a
// prefill group of size a to a decode group of size b is, per destination
// rank, the list of (source rank, head range) pieces that cover its heads.
// Every destination head is written exactly once; a head replicated on
// several source ranks is read from one of them, chosen so that destination
// ranks spread over the replicas. Pieces are maximal: consecutive heads from
// the same source become one piece, so equal layouts give one piece per rank
// (a whole block span), fan-out one piece per destination rank, fan-in one
// piece per source rank that holds part of a destination rank's heads.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem {

// The KV heads one rank holds: [head_begin, head_begin + num_heads).
struct KvRankHeads {
  int64_t head_begin = 0;
  int64_t num_heads = 0;
};

// Heads [src_head_offset, src_head_offset + num_heads) of source rank
// `src_rank`'s region go to [dst_head_offset, ...) of destination rank
// `dst_rank`'s region (offsets are within each rank's own head range).
struct KvHeadRoute {
  int src_rank = 0;
  int dst_rank = 0;
  int64_t src_head_offset = 0;
  int64_t dst_head_offset = 0;
  int64_t num_heads = 0;

  friend bool operator==(const KvHeadRoute&, const KvHeadRoute&) = default;
};

// The pieces that carry every destination rank's heads, ordered by
// destination rank, then head. InvalidArgument when a group is empty, a
// range is empty or outside [0, total_heads), or a destination head is held
// by no source rank.
absl::StatusOr<std::vector<KvHeadRoute>> RouteKvHeads(std::span<const KvRankHeads> src,
                                                      std::span<const KvRankHeads> dst, int64_t total_heads);

}  // namespace tandem
