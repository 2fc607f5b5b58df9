// Sixteen 16-lane reduction trees at once, for the AVX-512 kernels whose
// outputs are each one register of 16 fp32 partial sums (the fp32 MatMul's
// accumulators, attention's key dots). The result lane of each input equals
// the shared scalar-order Tree (lanes l + (l+8), + (l+4), + (l+2), + (l+1):
// matmul_kernels.h, attention_kernels.h) bit for bit, because every stage
// adds the same lane pairs; it only shares the shuffles among 16 registers
// (46 instructions instead of 16 x 8). Include only from files compiled with
// -mavx512*. Users: matmul_avx512.cc, the fp8, int4 and
// vdpbf16ps matmul kernels (TileTrees), attention.
// Thread-safety: pure inline functions.
#pragma once

#include <immintrin.h>

namespace tandem::kernels::cpu::tree512 {

// Input slot s lands in lane SlotKey(s) (the tree transposes 4 x 4: slot
// k + 4i goes to lane 4k + i). SlotKey is its own inverse, so to get output t
// in lane t, put it in slot SlotKey(t).
constexpr int SlotKey(int s) { return 4 * (s % 4) + s / 4; }

// Lane SlotKey(s) = Tree(x[s]) for all 16 slots. Each stage adds, for every
// slot, the same lane pairs as one level of Tree.
inline __m512 TransposeTree(const __m512* x) {
  __m512 t[8], u[4], v[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {  // l + (l+8): 256-bit halves
    t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0xEE));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // + (l+4): 128-bit quarters
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xDD));
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {  // + (l+2): 64-bit pairs
    const __m512d a = _mm512_castps_pd(u[2 * i]), b = _mm512_castps_pd(u[2 * i + 1]);
    v[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // + (l+1): even and odd lanes.
  return _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Tree(acc[i][j]) for every output of an MR x NR register tile, sixteen per
// TransposeTree (row-major; the last group's unused slots are zeros): calls
// out(i, j, sum) once per output, in row-major order. For the matmul kernels
// whose tile outputs each finish in one Tree (fp8, int4, bf16); `out` does
// the kernel's own bias/scale arithmetic after the tree, as before. Only
// instantiate with a functor local to the including (-mavx512*) file.
template <int MR, int NR, typename Out>
inline void TileTrees(const __m512 (&acc)[MR][NR], Out out) {
  constexpr int kOutputs = MR * NR;
#pragma GCC unroll 2
  for (int c = 0; c < kOutputs; c += 16) {
    __m512 slots[16];
#pragma GCC unroll 16
    for (int s = 0; s < 16; ++s) {
      const int t = c + SlotKey(s);
      slots[s] = t < kOutputs ? acc[t / NR][t % NR] : _mm512_setzero_ps();
    }
    alignas(64) float sums[16];
    _mm512_store_ps(sums, TransposeTree(slots));
    for (int t = c; t < kOutputs && t < c + 16; ++t) out(t / NR, t % NR, sums[t - c]);
  }
}

}  // namespace tandem::kernels::cpu::tree512
