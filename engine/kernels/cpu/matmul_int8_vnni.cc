// Int8 dot products on AVX512-VNNI; compiled with -mavx512f -mavx512bw
// -mavx512vnni and run only when CpuHasAvx512Vnni().
//
// vpdpbusd multiplies unsigned bytes by signed bytes (four per int32 lane)
// and adds into int32 lanes without saturation. The activations are signed,
// so each is offset by 128 (x ^ 0x80 reinterprets q in [-127, 127] as q + 128
// in [1, 255]) and 128 * sum_k w[j][k] is subtracted at the end:
//   sum (q + 128) w = sum q w + 128 sum w.
// All of it is modular int32 arithmetic, so the result is exact whenever the
// true sum fits in int32, even if a partial sum wraps on the way.
//
// Shape of the work: a kMr x kNr register tile (batch rows x weight rows),
// both operands k-contiguous, 64 k per step; the lanes of each accumulator
// are added at the end (in any order: integers).
// Thread-safety: pure function.
#include <immintrin.h>

#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_int8_kernels.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int kMr = 4;  // batch rows per tile
constexpr int kNr = 6;  // weight rows per tile (24 accumulators + 4 x + 1 w <= 32 zmm)

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

template <int MR, int NR>
void Tile(const int8_t* x, const int8_t* w, const int32_t* w_sums, int64_t kp, int32_t* acc, int64_t ld_acc) {
  __m512i a[MR][NR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) a[i][j] = _mm512_setzero_si512();
  }
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t k = 0; k < kp; k += 64) {
    __m512i xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_xor_si512(_mm512_loadu_si512(x + i * kp + k), flip);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512i wv = _mm512_loadu_si512(w + j * kp + k);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) a[i][j] = _mm512_dpbusd_epi32(a[i][j], xv[i], wv);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      // Unsigned: the correction may wrap; the difference is the exact sum.
      const uint32_t biased = static_cast<uint32_t>(_mm512_reduce_add_epi32(a[i][j]));
      acc[i * ld_acc + j] = static_cast<int32_t>(biased - 128u * static_cast<uint32_t>(w_sums[j]));
    }
  }
}

using TileFn = void (*)(const int8_t*, const int8_t*, const int32_t*, int64_t, int32_t*, int64_t);

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
    FillRow<3>(fn[2], std::make_integer_sequence<int, kNr>());
    FillRow<4>(fn[3], std::make_integer_sequence<int, kNr>());
  }
};

constexpr TileTable kTiles{};

}  // namespace

void Int8DotsAvx512Vnni(const Int8DotArgs& a) {
  for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
    const int64_t mr = Min(kMr, a.m - i0);
    for (int64_t j0 = 0; j0 < a.nr; j0 += kNr) {
      const int64_t nr = Min(kNr, a.nr - j0);
      kTiles.fn[mr - 1][nr - 1](a.xq + i0 * a.kp, a.w + j0 * a.kp, a.w_sums + j0, a.kp, a.acc + i0 * a.nr + j0,
                                a.nr);
    }
  }
}

}  // namespace tandem::kernels::cpu
