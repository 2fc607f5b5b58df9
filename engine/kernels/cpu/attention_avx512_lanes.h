// The per-register primitives of the AVX-512 attention kernel
// (paged_attention_avx512.cc): lane masks, exp, the 16-lane reduction trees
// of attention_kernels.h's shared order, and the loads that widen a K or V
// row of any cache dtype (F32, F16, BF16 in pair-split order, int8, FP8
// E4M3) to fp32. Include only from files compiled with -mavx512*.
// Thread-safety: pure inline functions.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "engine/kernels/cpu/attention_kernels.h"
#include "engine/kernels/cpu/tree_avx512.h"

namespace tandem::kernels::cpu::attn512 {

enum KvType { kF32 = 0, kF16 = 1, kBF16 = 2, kF8 = 3, kI8 = 4 };  // DType's values (kF8: E4M3)

inline __mmask16 LaneMask(int begin, int end) {
  return static_cast<__mmask16>(((1u << end) - 1u) & ~((1u << begin) - 1u));
}

// The shared Exp (attention_kernels.h), 16 lanes at a time.
inline __m512 Exp(__m512 x) {
  const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMin), _CMP_LT_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(kExpMin));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpC1), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpC2), r);
  __m512 p = _mm512_set1_ps(kExpPoly[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
  __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
  y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps(static_cast<__mmask16>(~under), y, _mm512_castsi512_ps(e));
}

// Lanes l + (l+8), + (l+4), + (l+2), + (l+1): the shared tree.
inline float Tree(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// The same tree with max (exact in any order; kept identical anyway).
inline float MaxTree(__m512 v) {
  const __m256 s8 = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s4 = _mm_max_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_movehdup_ps(s2)));
}

// 16 elements of a BF16/F16 row as fp32 (exact), in element order.
template <int WT>
inline __m512 Widen16(const uint16_t* src) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  if constexpr (WT == kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

// 16 one-byte codes as fp32: int8 as integers, fp8 (E4M3) as value / 256
// through binary16 (attention_kernels.h: the code sign-extended and shifted
// up by 7 is the binary16 but for bit 14, a copy of the sign, cleared).
template <int WT>
inline __m512 WidenCodes16(__m128i bytes) {
  if constexpr (WT == kI8) return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
  const __m256i half = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7),
                                        _mm256_set1_epi16(static_cast<short>(0xbf80)));
  return _mm512_cvtph_ps(half);
}

// A BF16 pair group (32 elements, one 64-byte load) as fp32: its even
// elements (the low half of each 32-bit word, shifted up) and its odd ones
// (the high half, masked): positions [0, 16) and [16, 32) of the group.
inline __m512 Bf16Evens(__m512i x) { return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)); }
inline __m512 Bf16Odds(__m512i x) {
  return _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}
inline __m512i LoadPairGroup(const void* row, int64_t g) {
  return _mm512_loadu_si512(static_cast<const uint16_t*>(row) + 32 * g);
}

// Positions [16c, 16c + 16) of a row of WT elements (NC = positions / 16),
// as fp32: BF16 rows in pair-split order (attention_kernels.h), others in
// element order.
template <int NC, int WT>
inline __m512 Load16(const void* row, int64_t c) {
  if constexpr (WT == kF32) return _mm512_loadu_ps(static_cast<const float*>(row) + 16 * c);
  if constexpr (WT == kI8 || WT == kF8) {
    const uint8_t* codes = static_cast<const uint8_t*>(row) + 16 * c;
    return WidenCodes16<WT>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  }
  if constexpr (WT == kBF16) {
    if ((c | 1) < NC) {
      const __m512i x = LoadPairGroup(row, c / 2);
      return c % 2 == 0 ? Bf16Evens(x) : Bf16Odds(x);
    }
  }
  return Widen16<WT>(static_cast<const uint16_t*>(row) + 16 * c);
}

}  // namespace tandem::kernels::cpu::attn512
