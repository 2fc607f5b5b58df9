// CPU kernels: MatMul dispatches to the per-ISA kernels (cpu/matmul_*.cc);
// the small elementwise ops are written for the compiler's vectoriser at the
// AVX2/FMA baseline.
//
// SiluMul's exponential is a fixed polynomial on 8 lanes (std::exp would run
// scalar at ~2 GB/s); it is elementwise, and the row's tail takes the same
// vector code padded, so a token's result is the same in any batch.
//
// Why RmsNorm's dot product keeps 16 independent lanes: without -ffast-math the
// compiler may not reorder a float reduction, so a single accumulator would
// run scalar. Sixteen lanes give it vector registers, and because the lane
// split depends only on the column index, the result for a row never depends
// on the batch it came in (batch invariance).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/kernels/ops.h"
#include "engine/kernels/cpu/exp_avx2.h"
#include "engine/kernels/cpu/matmul_kernels.h"

namespace tandem::kernels {
namespace {

constexpr int kLanes = 16;
constexpr int64_t kVec = 8;  // floats in an AVX2 register

// e^x on 8 lanes (cpu/exp_avx2.h), saturating as std::exp does: 0 below
// ln(FLT_MIN), +inf above 88.376 (std::exp overflows only above 88.72; silu
// there differs from 0 by < 1e-36).
__m256 Exp8(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(cpu::kExpLowest);
  const __m256 highest = _mm256_set1_ps(88.3762626647949f);
  __m256 y = cpu::ExpCore8(_mm256_min_ps(_mm256_max_ps(x, lowest), highest));
  y = _mm256_andnot_ps(_mm256_cmp_ps(x, lowest, _CMP_LT_OQ), y);
  return _mm256_blendv_ps(y, _mm256_set1_ps(std::numeric_limits<float>::infinity()),
                          _mm256_cmp_ps(x, highest, _CMP_GT_OQ));
}

// silu(g) * u = g / (1 + e^-g) * u, in the scalar formula's order.
__m256 SiluMul8(__m256 g, __m256 u) {
  const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

float Dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) acc[l] += a[i] * b[i];
  // Fixed pairwise tree over the lanes.
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  }
  return acc[0];
}

}  // namespace

void ConvertToFloat(DType t, const void* src, int64_t n, float* dst) {
  switch (t) {
    case DType::kF32: {
      std::copy_n(static_cast<const float*>(src), n, dst);
      return;
    }
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(s[i]);
      return;
    }
    case DType::kF16: {
      const auto* s = static_cast<const _Float16*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    // The storage types convert by value (scales, zero points, tools).
    case DType::kF8E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = E4M3ToFloat(s[i]);
      return;
    }
    case DType::kI8: {
      const auto* s = static_cast<const int8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::kU8: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::kI32: {
      int32_t v;
      for (int64_t i = 0; i < n; ++i) {
        std::memcpy(&v, static_cast<const uint8_t*>(src) + 4 * i, 4);
        dst[i] = static_cast<float>(v);
      }
      return;
    }
    case DType::kI64: {
      int64_t v;
      for (int64_t i = 0; i < n; ++i) {
        std::memcpy(&v, static_cast<const uint8_t*>(src) + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return;
    }
  }
}

void MatMul(const float* x, int64_t m, const WeightRef& w, const float* bias, float* y) {
  // The ISA kernels see the weight dtype as DType's integer value.
  static_assert(static_cast<int>(DType::kF32) == 0 && static_cast<int>(DType::kF16) == 1 &&
                static_cast<int>(DType::kBF16) == 2);
  const cpu::MatMulArgs args{x, m, static_cast<int>(w.dtype), w.data, w.rows, w.cols,
                             w.row_stride > 0 ? w.row_stride : w.cols, bias, y};
  if (ActiveCpuIsa() >= CpuIsa::kAvx512) {
    cpu::MatMulAvx512(args);
  } else {
    cpu::MatMulAvx2(args);
  }
}

void RmsNorm(const float* x, int64_t m, int64_t d, const WeightRef& weight, double eps, float* out) {
  std::vector<float> wf(d);
  ConvertToFloat(weight.dtype, weight.data, d, wf.data());
#pragma omp parallel for schedule(static) if (m > 4)
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * d;
    const float ms = Dot(xi, xi, d) / static_cast<float>(d);
    const float inv = 1.0f / std::sqrt(ms + static_cast<float>(eps));
    float* oi = out + i * d;
    for (int64_t j = 0; j < d; ++j) oi[j] = xi[j] * inv * wf[j];
  }
}

void ApplyRope(float* x, int64_t m, int64_t row_stride, int64_t num_heads, int64_t head_dim,
               const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (m > 4)
  for (int64_t i = 0; i < m; ++i) {
    const float* c = cos + i * half;
    const float* s = sin + i * half;
    for (int64_t h = 0; h < num_heads; ++h) {
      float* v = x + i * row_stride + h * head_dim;
      for (int64_t j = 0; j < half; ++j) {
        const float a = v[j];
        const float b = v[j + half];
        v[j] = a * c[j] - b * s[j];
        v[j + half] = b * c[j] + a * s[j];
      }
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t m, int64_t d, float* out) {
  const int64_t n = m * d;
  const int64_t full = n / kVec;
#pragma omp parallel for schedule(static) if (n > 4096)
  for (int64_t b = 0; b < full; ++b) {
    const int64_t i = b * kVec;
    _mm256_storeu_ps(out + i, SiluMul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  // The tail goes through the same vector code, padded, so an element's
  // result never depends on where the row ends.
  const int64_t tail = n - full * kVec;
  if (tail > 0) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(tail)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const int64_t i = full * kVec;
    const __m256 y = SiluMul8(_mm256_maskload_ps(gate + i, mask), _mm256_maskload_ps(up + i, mask));
    _mm256_maskstore_ps(out + i, mask, y);
  }
}

void EmbeddingLookup(const WeightRef& table, std::span<const int32_t> ids, float* out) {
  for (size_t i = 0; i < ids.size(); ++i) {
    ConvertToFloat(table.dtype, table.RowBytes(ids[i]), table.cols, out + i * table.cols);
  }
}

}  // namespace tandem::kernels
