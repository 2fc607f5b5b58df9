// FP8 dot products for AVX-512 (F/BW/VL); compiled with -mavx512* and run
// only when ActiveCpuIsa() >= kAvx512. Numerics: fp8_matmul.h (one zmm is
// exactly the 16 shared lanes, so this file and the AVX2 one agree bit for
// bit); widening: matmul_fp8_kernels.h.
//
// Shape of the work, per panel of weight rows handed in by matmul_fp8.cc:
// sub-panels of kNr rows; a kMr x kNr register tile over the batch rows.
//  - Few batch rows (decode, m <= kMr): codes are widened in registers as
//    they stream in, once per tile for all its batch rows; 1 byte per weight
//    read from memory. The widening (6 vector uops per 16 weights) makes
//    the kernel about as compute- as memory-bound on one core, so the next
//    sub-panel's codes are prefetched while this one computes: without it
//    the two costs added up (measured: ~1.4x slower from memory).
//    (Staging the codes as F16 patterns for vcvtph2ps from memory measured
//    no faster from memory, so the simpler form stays.)
//  - Many rows (prefill): a sub-panel is widened once into the fp32 scratch
//    (L1/L2 resident) and every row tile reads it with plain loads. Widening
//    gives the same floats either way, so the bits do not change.
// Thread-safety: pure functions.
#include <immintrin.h>

#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_fp8_kernels.h"
#include "engine/kernels/cpu/tree_avx512.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int kMr = 4;  // batch rows per register tile
constexpr int kNr = 6;  // weight rows per tile (4 x 6 accumulators + 4 x + 1 w < 32 zmm)
static_assert(kNr <= kFp8ScratchRows);

enum Source { kCodes, kFloats };

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// 16 codes as E4M3 * 2^-8 (matmul_fp8_kernels.h).
inline __m512 Widen16(const uint8_t* c) {
  const __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
  const __m256i f16 = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16(static_cast<short>(0xBF80)));
  return _mm512_cvtph_ps(f16);
}

// 16 weights of row j from element k: codes or already-widened floats. The
// rows are padded to kp (zeros), so a group past k reads zeros, never a tail.
template <int S>
inline __m512 LoadW(const void* w, int64_t ldw, int j, int64_t k) {
  if constexpr (S == kCodes) {
    return Widen16(static_cast<const uint8_t*>(w) + j * ldw + k);
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(w) + j * ldw + k);
  }
}

// acc[i][j] = S(x[i], w[j]) for an MR x NR tile.
// `next` (may be null): the codes the following sub-panel will read
// (kNr * ldw bytes), prefetched 96 bytes per 16 k as this tile walks k, so
// memory streams while this tile computes instead of in a separate phase.
template <int MR, int NR, int S>
void Tile(const float* x, int64_t ldx, int64_t k, const void* w, int64_t ldw, float* acc, int64_t ld_acc,
          const char* next) {
  __m512 a[MR][NR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) a[i][j] = _mm512_setzero_ps();
  }
  int64_t kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    if (next != nullptr) {
      _mm_prefetch(next + kk * kNr, _MM_HINT_T0);
      _mm_prefetch(next + kk * kNr + 64, _MM_HINT_T0);
    }
    __m512 xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_ps(x + i * ldx + kk);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512 wv = LoadW<S>(w, ldw, j, kk);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) a[i][j] = _mm512_fmadd_ps(xv[i], wv, a[i][j]);
    }
  }
  if (kk < k) {  // the last group: x masked to zero past k, w zero there already
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - kk)) - 1);
    __m512 xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_maskz_loadu_ps(mask, x + i * ldx + kk);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512 wv = LoadW<S>(w, ldw, j, kk);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) a[i][j] = _mm512_fmadd_ps(xv[i], wv, a[i][j]);
    }
  }
  // The shared tree (lanes l + (l+8), + (l+4), + (l+2), + (l+1)), sixteen
  // outputs per TransposeTree: the same bits as one Tree per output.
  tree512::TileTrees<MR, NR>(a, [&](int i, int j, float sum) { acc[i * ld_acc + j] = sum; });
}

using TileFn = void (*)(const float*, int64_t, int64_t, const void*, int64_t, float*, int64_t, const char*);

template <int S, int MR, int... NRs>
constexpr void FillRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1, S>), ...);
}

// fn[mr - 1][nr - 1] for every edge-tile size.
template <int S>
struct TileTable {
  TileFn fn[kMr][kNr];
  constexpr TileTable() : fn() {
    FillRow<S, 1>(fn[0], std::make_integer_sequence<int, kNr>());
    FillRow<S, 2>(fn[1], std::make_integer_sequence<int, kNr>());
    FillRow<S, 3>(fn[2], std::make_integer_sequence<int, kNr>());
    FillRow<S, 4>(fn[3], std::make_integer_sequence<int, kNr>());
  }
};

template <int S>
constexpr TileTable<S> kTiles{};

}  // namespace

void WidenFp8Avx512(const uint8_t* codes, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 16) _mm512_storeu_ps(out + i, Widen16(codes + i));
}

void Fp8DotsAvx512(const Fp8DotArgs& a) {
  // Widening to fp32 once pays off when more than one row tile reuses the rows.
  const bool widen = a.m > kMr;
  for (int64_t j0 = 0; j0 < a.nr; j0 += kNr) {
    const int64_t nr = Min(kNr, a.nr - j0);
    const uint8_t* codes = a.codes + j0 * a.kp;
    if (widen) WidenFp8Avx512(codes, nr * a.kp, a.scratch);  // rows are contiguous: [nr][kp]
    for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
      const int64_t mr = Min(kMr, a.m - i0);
      float* acc = a.acc + i0 * a.nr + j0;
      if (widen) {
        kTiles<kFloats>.fn[mr - 1][nr - 1](a.x + i0 * a.k, a.k, a.k, a.scratch, a.kp, acc, a.nr, nullptr);
      } else {
        // The next sub-panel's codes follow this one's in memory (past the
        // panel: the next panel's, or a harmless prefetch past the matrix).
        const auto* next = reinterpret_cast<const char*>(codes + nr * a.kp);
        kTiles<kCodes>.fn[mr - 1][nr - 1](a.x + i0 * a.k, a.k, a.k, codes, a.kp, acc, a.nr, next);
      }
    }
  }
}

}  // namespace tandem::kernels::cpu
