// KV-cache storage of one tensor-parallel rank: one region per layer,
// [num_blocks][2 (K, V)][num_local_kv_heads][block_size][head_dim], all layers
// in one allocation (one memory registration for a transport).
//
// Within a layer, one block's K and V for this rank's KV heads form one
// contiguous span (`BlockSpan`), so shipping a block to another worker is one
// put per layer. Block bookkeeping (free list, ref counts, prefix cache) lives
// in engine/core; this class only owns memory and answers addresses.
// Elements are stored as `dtype` (fp32, bf16 or fp16); kernels convert.
// Thread-safety: none; the engine loop owns it. Concurrent reads are safe.
#pragma once

#include <cstdint>
#include <span>

#include "engine/model/dtype.h"
#include "engine/model/huge_page_buffer.h"

namespace tandem {

struct KvCacheShape {
  int64_t num_layers = 0;
  int64_t num_blocks = 0;
  int64_t block_size = 16;  // tokens per block
  int64_t num_kv_heads = 0;  // this rank's KV heads
  int64_t head_dim = 0;
  DType dtype = DType::kF32;

  int64_t block_span_elems() const { return 2 * num_kv_heads * block_size * head_dim; }
  int64_t block_span_bytes() const { return block_span_elems() * static_cast<int64_t>(DTypeSize(dtype)); }
  int64_t layer_bytes() const { return num_blocks * block_span_bytes(); }
  int64_t total_bytes() const { return num_layers * layer_bytes(); }
  int64_t num_slots() const { return num_blocks * block_size; }
  // Bytes one block costs across all layers (for sizing a pool from a budget).
  int64_t bytes_per_block() const { return num_layers * block_span_bytes(); }
};

class KvCache {
 public:
  explicit KvCache(const KvCacheShape& shape)
      : shape_(shape), memory_(static_cast<size_t>(shape.total_bytes()) + kSlack) {
    // Not zeroed on purpose: attention reads only slots this cache's owner
    // wrote, and leaving pages untouched keeps a large idle pool free. Huge
    // pages: attention reaches the cache in scattered blocks (see
    // huge_page_buffer.h).
  }
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvCacheShape& shape() const { return shape_; }

  // The whole allocation (for registering it with a transport).
  std::span<uint8_t> Memory() { return {memory_.data(), static_cast<size_t>(shape_.total_bytes())}; }

  // The contiguous K+V bytes of `block` in `layer`.
  std::span<uint8_t> BlockSpan(int64_t layer, int64_t block) {
    return {memory_.data() + layer * shape_.layer_bytes() + block * shape_.block_span_bytes(),
            static_cast<size_t>(shape_.block_span_bytes())};
  }

  // K (or V) of one KV head at one slot (slot = block * block_size + offset):
  // head_dim elements of shape().dtype.
  void* Key(int64_t layer, int64_t slot, int64_t head) { return Address(layer, slot, head, 0); }
  void* Value(int64_t layer, int64_t slot, int64_t head) { return Address(layer, slot, head, 1); }
  const void* Key(int64_t layer, int64_t slot, int64_t head) const {
    return const_cast<KvCache*>(this)->Address(layer, slot, head, 0);
  }
  const void* Value(int64_t layer, int64_t slot, int64_t head) const {
    return const_cast<KvCache*>(this)->Address(layer, slot, head, 1);
  }

 private:
  static constexpr size_t kSlack = 64;  // readable bytes past the end, for vector loads

  void* Address(int64_t layer, int64_t slot, int64_t head, int kv) {
    const int64_t block = slot / shape_.block_size;
    const int64_t offset = slot % shape_.block_size;
    const int64_t elem =
        ((kv * shape_.num_kv_heads + head) * shape_.block_size + offset) * shape_.head_dim;
    return memory_.data() + layer * shape_.layer_bytes() + block * shape_.block_span_bytes() +
           elem * static_cast<int64_t>(DTypeSize(shape_.dtype));
  }

  KvCacheShape shape_;
  HugePageBuffer memory_;
};

}  // namespace tandem
