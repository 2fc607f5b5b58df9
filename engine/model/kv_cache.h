// KV-cache storage of one tensor-parallel rank: one region per layer,
// [num_blocks][2 (K, V)][num_local_kv_heads][block_size][head_dim], all layers
// in one allocation (one memory registration for a transport).
//
// Within a layer, one block's K and V for this rank's KV heads form one
// contiguous span (`BlockSpan`), so shipping a block to another worker is one
// put per layer. Block bookkeeping (free list, ref counts, prefix cache) lives
// in engine/core; this class only owns memory and answers addresses.
// Elements are stored as `dtype` (fp32, bf16 or fp16); kernels convert.
//
// Quantized caches (`--kv-cache-dtype int8|fp8`) keep the same order, but
// each (K or V, head) piece of a block is [block_size][head_dim] one-byte
// codes followed, for int8, by [block_size] fp32 scales (one per token: the
// row's value is code * scale), the piece padded to 64 bytes. Keeping the
// scales inside the head's piece means a block's span carries its own
// scales (shipping, prefix caching and copy-on-write move bytes, never
// decode them), and a head slice of a span (kv_transfer's head-slice puts
// between TP groups of different sizes) still moves whole pieces. fp8 (E4M3)
// pieces hold codes only: their scales are static, per layer and KV head,
// owned by the model (kernels::KvHeadScales).
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

  // Whether elements are one-byte codes (kI8: per-token scales in the
  // span; kF8E4M3: static scales outside it) rather than floats.
  bool quantized() const { return dtype == DType::kI8 || dtype == DType::kF8E4M3; }
  // Bytes of one head's K (or V) rows of one block, codes only.
  int64_t rows_bytes() const { return block_size * head_dim * static_cast<int64_t>(DTypeSize(dtype)); }
  // Offset of the int8 per-token scales inside a piece (4-byte aligned).
  int64_t scales_offset() const { return (rows_bytes() + 3) / 4 * 4; }
  // One (K or V, head) piece of a block: the rows, then (int8) the scales,
  // padded to 64 bytes for quantized dtypes so every piece and span starts
  // on a cache line. Float dtypes keep their unpadded size.
  int64_t head_piece_bytes() const {
    if (!quantized()) return rows_bytes();
    const int64_t raw = dtype == DType::kI8 ? scales_offset() + block_size * 4 : rows_bytes();
    return (raw + 63) / 64 * 64;
  }
  int64_t block_span_bytes() const { return 2 * num_kv_heads * head_piece_bytes(); }
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
  // head_dim elements of shape().dtype (codes for int8/fp8). The rows of one
  // head within a block are consecutive (stride head_dim elements).
  void* Key(int64_t layer, int64_t slot, int64_t head) { return Address(layer, slot, head, 0); }
  void* Value(int64_t layer, int64_t slot, int64_t head) { return Address(layer, slot, head, 1); }
  const void* Key(int64_t layer, int64_t slot, int64_t head) const {
    return const_cast<KvCache*>(this)->Address(layer, slot, head, 0);
  }
  const void* Value(int64_t layer, int64_t slot, int64_t head) const {
    return const_cast<KvCache*>(this)->Address(layer, slot, head, 1);
  }
  // int8 caches only: the fp32 scale of Key(...)'s (Value(...)'s) row; the
  // scales of one head within a block are consecutive too.
  float* KeyScale(int64_t layer, int64_t slot, int64_t head) { return ScaleAddress(layer, slot, head, 0); }
  float* ValueScale(int64_t layer, int64_t slot, int64_t head) { return ScaleAddress(layer, slot, head, 1); }
  const float* KeyScale(int64_t layer, int64_t slot, int64_t head) const {
    return const_cast<KvCache*>(this)->ScaleAddress(layer, slot, head, 0);
  }
  const float* ValueScale(int64_t layer, int64_t slot, int64_t head) const {
    return const_cast<KvCache*>(this)->ScaleAddress(layer, slot, head, 1);
  }

 private:
  static constexpr size_t kSlack = 64;  // readable bytes past the end, for vector loads

  // The start of (kv, head)'s piece of the block holding `slot`.
  uint8_t* Piece(int64_t layer, int64_t slot, int64_t head, int kv) {
    const int64_t block = slot / shape_.block_size;
    return memory_.data() + layer * shape_.layer_bytes() + block * shape_.block_span_bytes() +
           (kv * shape_.num_kv_heads + head) * shape_.head_piece_bytes();
  }
  void* Address(int64_t layer, int64_t slot, int64_t head, int kv) {
    const int64_t offset = slot % shape_.block_size;
    return Piece(layer, slot, head, kv) + offset * shape_.head_dim * static_cast<int64_t>(DTypeSize(shape_.dtype));
  }
  float* ScaleAddress(int64_t layer, int64_t slot, int64_t head, int kv) {
    const int64_t offset = slot % shape_.block_size;
    return reinterpret_cast<float*>(Piece(layer, slot, head, kv) + shape_.scales_offset()) + offset;
  }

  KvCacheShape shape_;
  HugePageBuffer memory_;
};

}  // namespace tandem
