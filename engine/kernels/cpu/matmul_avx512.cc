// MatMul for AVX-512 (F/BW/VL/DQ); compiled with -mavx512* and run only when
// ActiveCpuIsa() >= kAvx512. Numerics: matmul_kernels.h (one zmm register is
// exactly the 16 shared lanes, so this file and the AVX2 one agree bit for bit).
//
// Shape of the work: the weight matrix is cut into panels of kNr rows; a
// thread takes whole panels, and for each runs a kMr x kNr register tile over
// the batch rows. Both operands are k-contiguous (a row of x, a row of W), so
// every accumulator is one output's 16 lanes and k is never split.
//  - Up to kMr batch rows (batch-1 decode): weights are widened in registers
//    as they stream in; the kernel is bound by memory bandwidth.
//  - More rows (batched decode, prefill): the first row tile over a BF16/F16
//    panel widens it as it goes and stores the fp32 rows in a scratch (L1
//    resident) that every later row tile reuses, so their inner loop is loads
//    + FMAs only; meanwhile it prefetches the next panel, so the weight stream
//    from memory overlaps the arithmetic (a separate widening pass before
//    the tiles left batched decode waiting on memory: 16-row steps 12% slower).
//    Widening is exact, so the bits do not change.
// Thread-safety: pure function; parallel inside (OpenMP).
#include <immintrin.h>

#include <cstdlib>
#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_kernels.h"
#include "engine/kernels/cpu/thread_scratch.h"
#include "engine/kernels/cpu/tree_avx512.h"

namespace tandem::kernels::cpu {
namespace {

enum WeightType { kF32 = 0, kF16 = 1, kBF16 = 2 };  // DType's values

constexpr int kMr = 4;  // batch rows per register tile
constexpr int kNr = 6;  // weight rows per tile (4 x 6 accumulators + 4 x + 1 w < 32 zmm)

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

template <int WT>
inline __m512 LoadW(const char* row, int64_t k) {
  if constexpr (WT == kF32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k));
    if constexpr (WT == kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
  }
}

// The last partial group: lanes outside `mask` read as zero.
template <int WT>
inline __m512 LoadWTail(const char* row, int64_t k, __mmask16 mask) {
  if constexpr (WT == kF32) {
    return _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float*>(row) + k);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(mask, row + 2 * k);
    if constexpr (WT == kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
  }
}

// y[i][j] = x[i] . w[j] (+ bias[j]) for an MR x NR tile.
// `next` (may be null): the 16-bit weight rows (`next_ld` bytes apart) the
// following panel will stream; prefetched one cache line per row per 32
// elements as this tile walks k, so the next panel is in flight while this
// one computes (streaming decode weights).
// STORE: also write each widened weight vector to `widened` ([NR][k] fp32),
// so the panel's later row tiles read it without a widening pass of their own.
template <int MR, int NR, int WT, bool STORE = false>
void Tile(const float* x, int64_t ldx, const char* w, int64_t ldw_bytes, int64_t k, const float* bias,
          float* y, int64_t ldy, const char* next, int64_t next_ld, float* widened) {
  __m512 acc[MR][NR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  int64_t kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    if (next != nullptr && (kk & 31) == 0) {
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) _mm_prefetch(next + j * next_ld + 2 * kk, _MM_HINT_T0);
    }
    __m512 xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_ps(x + i * ldx + kk);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512 wv = LoadW<WT>(w + j * ldw_bytes, kk);
      if constexpr (STORE) _mm512_storeu_ps(widened + j * k + kk, wv);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  if (kk < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - kk)) - 1);
    __m512 xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_maskz_loadu_ps(mask, x + i * ldx + kk);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512 wv = LoadWTail<WT>(w + j * ldw_bytes, kk, mask);
      if constexpr (STORE) _mm512_mask_storeu_ps(widened + j * k + kk, mask, wv);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  // Sixteen trees per TransposeTree: the same bits as Tree one by one, a
  // fifth of the instructions (it matters at small k and batched decode).
  tree512::TileTrees<MR, NR>(acc, [&](int i, int j, float sum) {
    y[i * ldy + j] = sum + (bias != nullptr ? bias[j] : 0.0f);
  });
}

using TileFn = void (*)(const float*, int64_t, const char*, int64_t, int64_t, const float*, float*, int64_t,
                       const char*, int64_t, float*);

template <int WT, bool STORE, int MR, int... NRs>
constexpr void FillRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1, WT, STORE>), ...);
}

// table[mr - 1][nr - 1] for every edge-tile size.
template <int WT, bool STORE>
struct TileTable {
  TileFn fn[kMr][kNr];
  constexpr TileTable() : fn() {
    FillRow<WT, STORE, 1>(fn[0], std::make_integer_sequence<int, kNr>());
    FillRow<WT, STORE, 2>(fn[1], std::make_integer_sequence<int, kNr>());
    FillRow<WT, STORE, 3>(fn[2], std::make_integer_sequence<int, kNr>());
    FillRow<WT, STORE, 4>(fn[3], std::make_integer_sequence<int, kNr>());
  }
};

template <int WT, bool STORE = false>
constexpr TileTable<WT, STORE> kTiles{};

// Per-thread fp32 panel scratch; grows, never shrinks (a few hundred KiB).
float* PanelScratch(int64_t floats) {
  static thread_local ThreadScratch scratch;
  return static_cast<float*>(scratch.Get(static_cast<size_t>(floats) * sizeof(float)));
}

template <int WT>
void Run(const MatMulArgs& a) {
  constexpr int64_t kElem = WT == kF32 ? 4 : 2;
  const int64_t ldw = a.row_stride * kElem;
  const int64_t num_panels = (a.n + kNr - 1) / kNr;
  // Widening once per panel pays off when more than one row tile reuses it.
  const bool widen = WT != kF32 && a.m > kMr;
  // Below this many multiply-adds a thread team costs more than it saves.
  const bool parallel = a.m * a.n * a.k >= (1 << 16);
#pragma omp parallel if (parallel)
  {
    float* scratch = widen ? PanelScratch(kNr * a.k) : nullptr;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < num_panels; ++p) {
      const int64_t r0 = p * kNr;
      const int64_t nr = Min(kNr, a.n - r0);
      const char* wp = static_cast<const char*>(a.w) + r0 * ldw;
      const float* bias = a.bias != nullptr ? a.bias + r0 : nullptr;
      // The next panel's 16-bit rows, prefetched while this panel computes
      // (not after the last panel; prefetch offsets assume 2-byte elements).
      const char* next = WT != kF32 && p + 1 < num_panels && a.k <= ldw / 2 ? wp + kNr * ldw : nullptr;
      if (widen) {
        // The first row tile widens the panel into the scratch as it goes
        // (and prefetches the next panel: the other row tiles give the lines
        // time to arrive); the rest read the fp32 scratch.
        for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
          const int64_t mr = Min(kMr, a.m - i0);
          float* y = a.y + i0 * a.n + r0;
          if (i0 == 0) {
            kTiles<WT, true>.fn[mr - 1][nr - 1](a.x, a.k, wp, ldw, a.k, bias, y, a.n, next, ldw, scratch);
          } else {
            kTiles<kF32>.fn[mr - 1][nr - 1](a.x + i0 * a.k, a.k, reinterpret_cast<const char*>(scratch), a.k * 4,
                                            a.k, bias, y, a.n, nullptr, 0, nullptr);
          }
        }
      } else {
        // During the last row tile over this panel.
        for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
          const int64_t mr = Min(kMr, a.m - i0);
          kTiles<WT>.fn[mr - 1][nr - 1](a.x + i0 * a.k, a.k, wp, ldw, a.k, bias, a.y + i0 * a.n + r0, a.n,
                                        i0 + kMr >= a.m ? next : nullptr, ldw, nullptr);
        }
      }
    }
  }
}

}  // namespace

void MatMulAvx512(const MatMulArgs& a) {
  switch (a.weight_dtype) {
    case kF32:
      return Run<kF32>(a);
    case kF16:
      return Run<kF16>(a);
    default:
      return Run<kBF16>(a);
  }
}

}  // namespace tandem::kernels::cpu
