// FP8 dot products for AVX2 + FMA + F16C (the baseline). Numerics:
// fp8_matmul.h; the 16 shared lanes are two ymm registers (lanes 0-7 and
// 8-15), each lane running the same fma chain as the AVX-512 kernel's, so
// both give the same bits. Widening: matmul_fp8_kernels.h.
//
// Tiling mirrors matmul_fp8_avx512.cc with a smaller register tile (16 ymm):
// codes widened in registers while streaming for few batch rows (decode),
// a sub-panel widened once into the fp32 scratch for many (prefill).
// Thread-safety: pure functions.
#include <immintrin.h>

#include <cstring>
#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_fp8_kernels.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int kMr = 2;
constexpr int kNr = 3;  // 2 x 3 x 2 accumulators + 2 x + 1 w <= 16 ymm
static_assert(kNr <= kFp8ScratchRows);

enum Source { kCodes, kFloats };

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// 8 codes as E4M3 * 2^-8 (matmul_fp8_kernels.h).
inline __m256 Widen8(const uint8_t* c) {
  const __m128i h = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c)));
  return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(h, 7), _mm_set1_epi16(static_cast<short>(0xBF80))));
}

// 8 weights of row j from element k (rows padded to kp with zeros).
template <int S>
inline __m256 LoadW(const void* w, int64_t ldw, int j, int64_t k) {
  if constexpr (S == kCodes) {
    return Widen8(static_cast<const uint8_t*>(w) + j * ldw + k);
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(w) + j * ldw + k);
  }
}

// The shared tree over lanes lo (0-7) and hi (8-15).
inline float Tree(__m256 lo, __m256 hi) {
  const __m256 s8 = _mm256_add_ps(lo, hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// `next` (may be null): the codes of the following sub-panel (kNr * ldw
// bytes), prefetched 48 bytes per 16 k so memory streams while this tile
// computes (as in matmul_fp8_avx512.cc).
template <int MR, int NR, int S>
void Tile(const float* x, int64_t ldx, int64_t k, const void* w, int64_t ldw, float* acc, int64_t ld_acc,
          const char* next) {
  __m256 a[2][MR][NR];
#pragma GCC unroll 32
  for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) a[h][i][j] = _mm256_setzero_ps();
    }
  }
  const int64_t k16 = k / 16 * 16;
  for (int64_t kk = 0; kk < k16; kk += 16) {
    if (next != nullptr) _mm_prefetch(next + kk * kNr, _MM_HINT_T0);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256 xv[MR];
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) xv[i] = _mm256_loadu_ps(x + i * ldx + kk + 8 * h);
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) {
        const __m256 wv = LoadW<S>(w, ldw, j, kk + 8 * h);
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) a[h][i][j] = _mm256_fmadd_ps(xv[i], wv, a[h][i][j]);
      }
    }
  }
  if (k16 < k) {  // the last group: x copied zero-padded, w zero past k already
    float xt[MR][16] = {};
    for (int i = 0; i < MR; ++i) std::memcpy(xt[i], x + i * ldx + k16, static_cast<size_t>(k - k16) * sizeof(float));
    for (int h = 0; h < 2; ++h) {
      for (int j = 0; j < NR; ++j) {
        const __m256 wv = LoadW<S>(w, ldw, j, k16 + 8 * h);
        for (int i = 0; i < MR; ++i) a[h][i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(xt[i] + 8 * h), wv, a[h][i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) acc[i * ld_acc + j] = Tree(a[0][i][j], a[1][i][j]);
  }
}

using TileFn = void (*)(const float*, int64_t, int64_t, const void*, int64_t, float*, int64_t, const char*);

template <int S, int MR, int... NRs>
constexpr void FillRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1, S>), ...);
}

template <int S>
struct TileTable {
  TileFn fn[kMr][kNr];
  constexpr TileTable() : fn() {
    FillRow<S, 1>(fn[0], std::make_integer_sequence<int, kNr>());
    FillRow<S, 2>(fn[1], std::make_integer_sequence<int, kNr>());
  }
};

template <int S>
constexpr TileTable<S> kTiles{};

}  // namespace

void WidenFp8Avx2(const uint8_t* codes, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 8) _mm256_storeu_ps(out + i, Widen8(codes + i));
}

void Fp8DotsAvx2(const Fp8DotArgs& a) {
  const bool widen = a.m > kMr;
  for (int64_t j0 = 0; j0 < a.nr; j0 += kNr) {
    const int64_t nr = Min(kNr, a.nr - j0);
    const uint8_t* codes = a.codes + j0 * a.kp;
    if (widen) WidenFp8Avx2(codes, nr * a.kp, a.scratch);
    for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
      const int64_t mr = Min(kMr, a.m - i0);
      float* acc = a.acc + i0 * a.nr + j0;
      if (widen) {
        kTiles<kFloats>.fn[mr - 1][nr - 1](a.x + i0 * a.k, a.k, a.k, a.scratch, a.kp, acc, a.nr, nullptr);
      } else {
        const auto* next = reinterpret_cast<const char*>(codes + nr * a.kp);  // the next sub-panel's codes
        kTiles<kCodes>.fn[mr - 1][nr - 1](a.x + i0 * a.k, a.k, a.k, codes, a.kp, acc, a.nr, next);
      }
    }
  }
}

}  // namespace tandem::kernels::cpu
