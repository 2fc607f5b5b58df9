// KV-cache storage of one tensor-parallel rank: one tensor per layer,
// [num_blocks][2 (K, V)][num_local_kv_heads][block_size][head_dim].
//
// Within a layer, one block's K and V for this rank's KV heads form one
// contiguous span (`BlockSpan`), so shipping a block to another worker is one
// put per layer. Block bookkeeping (free list, ref counts, prefix cache) lives
// elsewhere; this class only owns memory and answers addresses.
// Storage is fp32 for now (the KV dtype option arrives with the block pool).
// Thread-safety: none; the engine loop owns it. Concurrent reads are safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tandem {

struct KvCacheShape {
  int64_t num_layers = 0;
  int64_t num_blocks = 0;
  int64_t block_size = 16;  // tokens per block
  int64_t num_kv_heads = 0;  // this rank's KV heads
  int64_t head_dim = 0;

  int64_t block_span_elems() const { return 2 * num_kv_heads * block_size * head_dim; }
  int64_t num_slots() const { return num_blocks * block_size; }
};

class KvCache {
 public:
  explicit KvCache(const KvCacheShape& shape)
      : shape_(shape),
        layers_(shape.num_layers, std::vector<float>(shape.num_blocks * shape.block_span_elems())) {}
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvCacheShape& shape() const { return shape_; }

  // The contiguous K+V span of `block` in `layer`.
  std::span<float> BlockSpan(int64_t layer, int64_t block) {
    return {layers_[layer].data() + block * shape_.block_span_elems(),
            static_cast<size_t>(shape_.block_span_elems())};
  }

  // K (or V) of one KV head at one slot (slot = block * block_size + offset).
  float* Key(int64_t layer, int64_t slot, int64_t head) { return &layers_[layer][Offset(slot, head, 0)]; }
  float* Value(int64_t layer, int64_t slot, int64_t head) { return &layers_[layer][Offset(slot, head, 1)]; }
  const float* Key(int64_t layer, int64_t slot, int64_t head) const {
    return &layers_[layer][Offset(slot, head, 0)];
  }
  const float* Value(int64_t layer, int64_t slot, int64_t head) const {
    return &layers_[layer][Offset(slot, head, 1)];
  }

 private:
  size_t Offset(int64_t slot, int64_t head, int kv) const {
    const int64_t block = slot / shape_.block_size;
    const int64_t offset = slot % shape_.block_size;
    return static_cast<size_t>(
        block * shape_.block_span_elems() +
        ((kv * shape_.num_kv_heads + head) * shape_.block_size + offset) * shape_.head_dim);
  }

  KvCacheShape shape_;
  std::vector<std::vector<float>> layers_;  // [num_layers][num_blocks * block_span_elems]
};

}  // namespace tandem
