// Tensor-parallel sharding arithmetic: which slice of a dimension a rank owns.
// Thread-safety: pure functions.
#pragma once

#include <algorithm>
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

// KV heads of a rank. With fewer KV heads than ranks, each KV head is
// replicated on size / kv_heads consecutive ranks (the query heads of a rank
// all map to that one KV head). Precondition: kv_heads % size == 0 or
// size % kv_heads == 0.
inline ShardRange KvHeadShard(int64_t kv_heads, const TpShard& shard) {
  if (kv_heads >= shard.size) return EvenShard(kv_heads, shard);
  return {shard.rank / (shard.size / kv_heads), 1};
}

// Vocabulary rows of a rank: ceil(vocab / size) each, the last ones fewer
// (possibly none). Every rank pads its logits to `padded_length` for the
// all-gather.
struct VocabShard {
  ShardRange range;
  int64_t padded_length = 0;
};
inline VocabShard VocabShardOf(int64_t vocab, const TpShard& shard) {
  const int64_t per_rank = (vocab + shard.size - 1) / shard.size;
  const int64_t begin = std::min<int64_t>(vocab, per_rank * shard.rank);
  return {{begin, std::min<int64_t>(per_rank, vocab - begin)}, per_rank};
}

}  // namespace tandem
