// Int8 dot products on AVX2 (the build's baseline). Both operands are
// widened to int16 and multiplied by vpmaddwd, which adds adjacent pairs of
// int16 products into int32: |pair| <= 2 * 127^2, exact, no saturation
// (unlike vpmaddubsw's int16 sums of u8 x s8 products).
//
// Shape of the work: a kMr x kNr register tile (batch rows x weight rows),
// 16 k per step; the 8 lanes of each accumulator are added at the end.
// Thread-safety: pure function.
#include <immintrin.h>

#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_int8_kernels.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int kMr = 2;  // batch rows per tile
constexpr int kNr = 4;  // weight rows per tile (8 accumulators + 2 x + 1 w <= 16 ymm)

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

inline int32_t Sum8(__m256i v) {
  const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
  return _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1)));
}

template <int MR, int NR>
void Tile(const int8_t* x, const int8_t* w, int64_t kp, int32_t* acc, int64_t ld_acc) {
  __m256i a[MR][NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) a[i][j] = _mm256_setzero_si256();
  }
  for (int64_t k = 0; k < kp; k += 16) {
    __m256i xv[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      xv[i] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i * kp + k)));
    }
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) {
      const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + j * kp + k)));
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) a[i][j] = _mm256_add_epi32(a[i][j], _mm256_madd_epi16(xv[i], wv));
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) acc[i * ld_acc + j] = Sum8(a[i][j]);
  }
}

using TileFn = void (*)(const int8_t*, const int8_t*, int64_t, int32_t*, int64_t);

template <int MR, int... NRs>
constexpr void FillRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1>), ...);
}

// fn[mr - 1][nr - 1] for every edge-tile size.
struct TileTable {
  TileFn fn[kMr][kNr];
  constexpr TileTable() : fn() {
    FillRow<1>(fn[0], std::make_integer_sequence<int, kNr>());
    FillRow<2>(fn[1], std::make_integer_sequence<int, kNr>());
  }
};

constexpr TileTable kTiles{};

}  // namespace

void Int8DotsAvx2(const Int8DotArgs& a) {
  for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
    const int64_t mr = Min(kMr, a.m - i0);
    for (int64_t j0 = 0; j0 < a.nr; j0 += kNr) {
      const int64_t nr = Min(kNr, a.nr - j0);
      kTiles.fn[mr - 1][nr - 1](a.xq + i0 * a.kp, a.w + j0 * a.kp, a.kp, a.acc + i0 * a.nr + j0, a.nr);
    }
  }
}

}  // namespace tandem::kernels::cpu
