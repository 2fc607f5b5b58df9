// Test helpers for quantized KV caches: fixed fp8 head scales, and the
// float64 value of a stored row computed from the cache's bytes by the
// layout's definition (kv_cache.h), independently of the kernels.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/kernels/ops.h"
#include "engine/kernels/paged_attention.h"
#include "engine/model/dtype.h"
#include "engine/model/kv_cache.h"

namespace tandem::kernels::testing {

// Per-head fp8 scales covering the cases that matter for values in [-2, 2):
// 1 (codes are the values), 0.004 (saturates beyond +-1.792), 8 (most codes
// subnormal) and 0.3 (an inexact scale). `salt` shifts the pattern (K vs V).
inline std::vector<float> Fp8TestScales(int64_t num_kv_heads, int salt) {
  const float kScales[] = {1.0f, 0.004f, 8.0f, 0.3f};
  std::vector<float> out;
  for (int64_t h = 0; h < num_kv_heads; ++h) out.push_back(kScales[(h + salt) % 4]);
  return out;
}

// Row (layer, slot, head) of K (kv = 0) or V (kv = 1) as the numbers it
// stands for, in float64: floats widened; int8 code * the row's scale (read
// at the piece's scale offset by hand, not through KeyScale); fp8
// E4M3ToFloat(code) * the head's static scale.
inline void StoredRow(const KvCache& cache, int64_t layer, int64_t slot, int64_t head, int kv,
                      KvHeadScales fp8_scales, double* out) {
  const KvCacheShape& s = cache.shape();
  const void* row = kv == 0 ? cache.Key(layer, slot, head) : cache.Value(layer, slot, head);
  const int64_t hd = s.head_dim;
  if (s.dtype == DType::kI8) {
    const auto* codes = static_cast<const int8_t*>(row);
    // The scales follow the piece's codes: [block_size] floats at the first
    // 4-byte boundary after block_size * head_dim bytes.
    const int64_t offset = slot % s.block_size;
    const auto* piece = reinterpret_cast<const uint8_t*>(codes - offset * hd);
    float scale;
    std::memcpy(&scale, piece + (s.block_size * hd + 3) / 4 * 4 + 4 * offset, sizeof scale);
    for (int64_t d = 0; d < hd; ++d) out[d] = static_cast<double>(codes[d]) * scale;
    return;
  }
  if (s.dtype == DType::kF8E4M3) {
    const auto* codes = static_cast<const uint8_t*>(row);
    const double scale = kv == 0 ? fp8_scales.k[head] : fp8_scales.v[head];
    for (int64_t d = 0; d < hd; ++d) out[d] = static_cast<double>(E4M3ToFloat(codes[d])) * scale;
    return;
  }
  std::vector<float> f(hd);
  ConvertToFloat(s.dtype, row, hd, f.data());
  for (int64_t d = 0; d < hd; ++d) out[d] = f[d];
}

}  // namespace tandem::kernels::testing
