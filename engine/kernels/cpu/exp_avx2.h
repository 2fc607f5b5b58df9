// The AVX2 e^x core shared by SiluMul (cpu/ops_cpu.cc) and the sampler's
// softmax (engine/sampler/logit_math.cc): Cephes' expf, a Cody-Waite
// reduction by ln 2 and a degree-6 polynomial, within 2 ulp of std::exp.
// Callers clamp the input first and handle their own range ends.
// Include only where AVX2 + FMA code generation is on (-mavx2 -mfma or
// #pragma GCC target("avx2,fma")); `static` keeps each copy in its own
// translation unit, so no other code can pick up an AVX2 definition.
#pragma once

#include <immintrin.h>

namespace tandem::kernels::cpu {

// ln(FLT_MIN): for x above it 2^round(x / ln 2) is a normal float.
inline constexpr float kExpLowest = -87.33654475f;

// e^x for x already clamped to [kExpLowest, 88.376]; no range handling.
static inline __m256 ExpCore8(__m256 xc) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);  // ln 2 in two parts: n * hi is exact
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)));
}

}  // namespace tandem::kernels::cpu
