// Tensor-parallel sharding arithmetic: which slice of a dimension a rank owns.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace tandem {

// Which slice of the model this process holds: rank `rank` of `size`.
struct TpShard {
  int rank = 0;
  int size = 1;
};

// A half-open range [begin, begin + length) of a sharded dimension.
struct ShardRange {
  int64_t begin = 0;
  int64_t length = 0;
};

// The even split of `total` items (rows, heads) over `shard.size` ranks.
// Precondition: total % shard.size == 0 (checked by the caller with a status).
inline ShardRange EvenShard(int64_t total, const TpShard& shard) {
  const int64_t per_rank = total / shard.size;
  return {per_rank * shard.rank, per_rank};
}

}  // namespace tandem
