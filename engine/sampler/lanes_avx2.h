// Loads for the sampler's AVX2 loops (cutoff.cc, logit_math.cc): a row's
// last partial vector is read padded, so it takes the same vector code as
// the rest.
//
// Why a pragma and not -mavx2: the router links this library (for
// SamplingParams) and may run where AVX2 is absent. Built with -mavx2, a
// file's copies of standard templates (std::vector growth, ...) could be the
// ones the linker keeps for the whole binary. So a file includes its
// standard headers first, then `#pragma GCC target("avx2,fma")`, then this
// header: only what is defined after the pragma is AVX2 code, and it runs
// only in Sample(), which only engine processes (AVX2 at least) call.
// Thread-safety: pure functions.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstddef>

namespace tandem::sampling {

inline constexpr ptrdiff_t kVec = 8;  // floats in an AVX2 register

// Mask of the first `n` lanes (n clamped to [0, 8]).
inline __m256i FirstLanes(ptrdiff_t n) {
  const int c = static_cast<int>(std::clamp<ptrdiff_t>(n, 0, kVec));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 floats from p, of which the first `left` exist; the others read as `pad`.
inline __m256 LoadPadded(const float* p, ptrdiff_t left, float pad) {
  if (left >= kVec) return _mm256_loadu_ps(p);
  const __m256i m = FirstLanes(left);
  return _mm256_blendv_ps(_mm256_set1_ps(pad), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}

}  // namespace tandem::sampling
