// Paged attention's chunk kernel for AVX-512 (F/BW/VL/DQ); compiled with
// -mavx512* and run only when ActiveCpuIsa() >= kAvx512. Numerics: the
// shared order in attention_kernels.h; one zmm register is exactly the 16
// shared lanes, so this file and the AVX2 one in paged_attention_cpu.cc agree
// bit for bit.
//
// Why the dot products look the way they do: with head_dim 64 a score costs
// only 4 fmas, so a horizontal sum per score would cost more than the
// products. The 16 scores of a chunk are instead summed together by a
// transposing tree (15 shuffle+add steps for 16 scores) that adds exactly the
// pairs Tree adds, leaving score j in lane j. The query row stays in
// registers while the chunk's 16 K rows stream from L1.
// Thread-safety: pure function over caller-owned buffers.
#include <immintrin.h>

#include "engine/kernels/cpu/attention_kernels.h"

namespace tandem::kernels::cpu {
namespace {

enum KvType { kF32 = 0, kF16 = 1, kBF16 = 2 };  // DType's values

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

// 16 elements of a BF16/F16 row as fp32 (exact).
template <int WT>
inline __m512 Widen16(const uint16_t* src) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  if constexpr (WT == kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

// Elements [16c, 16c + 16) of a row of WT elements, as fp32.
template <int WT>
inline __m512 Load16(const void* row, int64_t c) {
  if constexpr (WT == kF32) return _mm512_loadu_ps(static_cast<const float*>(row) + 16 * c);
  return Widen16<WT>(static_cast<const uint16_t*>(row) + 16 * c);
}

// Accumulator slot s holds key SlotKey(s): the transposing tree leaves slot
// k + 4i in lane 4k + i, so this relabelling puts key j in lane j.
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

// q . rows[SlotKey(s)] for the 16 slots, as lanes 0..15. NC (> 0): head_dim
// / 16 known at compile time, so the query row stays in registers; 0: any.
// Rows hold WT elements (NC > 0) or fp32 (NC == 0).
template <int NC, int WT>
inline __m512 Dot16(const float* q, const void* const* rows, int64_t nc) {
  __m512 acc[kAttnChunk];
  if constexpr (NC > 0) {
    __m512 qv[NC];
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) qv[c] = _mm512_loadu_ps(q + 16 * c);
#pragma GCC unroll 16
    for (int s = 0; s < kAttnChunk; ++s) {
      const void* row = rows[SlotKey(s)];
      acc[s] = _mm512_setzero_ps();
#pragma GCC unroll 16
      for (int c = 0; c < NC; ++c) acc[s] = _mm512_fmadd_ps(qv[c], Load16<WT>(row, c), acc[s]);
    }
  } else {
#pragma GCC unroll 16
    for (int s = 0; s < kAttnChunk; ++s) acc[s] = _mm512_setzero_ps();
    for (int64_t c = 0; c < nc; ++c) {
      const __m512 qv = _mm512_loadu_ps(q + 16 * c);
#pragma GCC unroll 16
      for (int s = 0; s < kAttnChunk; ++s) {
        acc[s] = _mm512_fmadd_ps(qv, Load16<kF32>(rows[SlotKey(s)], c), acc[s]);
      }
    }
  }
  return TransposeTree(acc);
}

// acc[0, 16 NC) = acc * alpha, then acc += e[j] * rows[j][col, col + 16 NC)
// for j in [jb, je); col is a multiple of 16.
template <int NC, int WT>
inline void AccumulateV(float* acc, int64_t col, float alpha, const float* e, const void* const* rows, int jb,
                        int je) {
  __m512 o[NC];
  const __m512 av = _mm512_set1_ps(alpha);
#pragma GCC unroll 16
  for (int c = 0; c < NC; ++c) o[c] = _mm512_mul_ps(_mm512_loadu_ps(acc + 16 * c), av);
  for (int j = jb; j < je; ++j) {
    const __m512 w = _mm512_set1_ps(e[j]);
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) o[c] = _mm512_fmadd_ps(w, Load16<WT>(rows[j], col / 16 + c), o[c]);
  }
#pragma GCC unroll 16
  for (int c = 0; c < NC; ++c) _mm512_storeu_ps(acc + 16 * c, o[c]);
}

// AccumulateV over any number of 16-lane groups of fp32 rows.
void AccumulateVAny(float* acc, int64_t nc, float alpha, const float* e, const void* const* rows, int jb,
                    int je) {
  int64_t c = 0;
  for (; c + 4 <= nc; c += 4) AccumulateV<4, kF32>(acc + 16 * c, 16 * c, alpha, e, rows, jb, je);
  for (; c < nc; ++c) AccumulateV<1, kF32>(acc + 16 * c, 16 * c, alpha, e, rows, jb, je);
}

// Widens (exactly) and zero-pads one row of head_dim elements to padded_dim floats.
void WidenRow(const void* src, int type, int64_t head_dim, int64_t padded_dim, float* dst) {
  for (int64_t d = 0; d < padded_dim; d += 16) {
    const int64_t n = head_dim - d < 16 ? (head_dim - d > 0 ? head_dim - d : 0) : 16;
    const __mmask16 mask = LaneMask(0, static_cast<int>(n));
    __m512 v;
    if (type == kF32) {
      v = _mm512_maskz_loadu_ps(mask, static_cast<const float*>(src) + d);
    } else {
      const __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(src) + d);
      v = type == kBF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)) : _mm512_cvtph_ps(h);
    }
    _mm512_storeu_ps(dst + d, v);
  }
}

// WidenRow for rows of exactly 16 NC 16-bit elements, unrolled.
template <int NC, int WT>
inline void WidenFullRow(const void* src, float* dst) {
#pragma GCC unroll 16
  for (int c = 0; c < NC; ++c) _mm512_storeu_ps(dst + 16 * c, Widen16<WT>(static_cast<const uint16_t*>(src) + 16 * c));
}

// The chunk's K and V rows, as WT rows: the cache's own rows where they are
// WT rows of a multiple of 16, else widened into scratch (WT = kF32); unread
// lanes alias the first read row so every pointer is loadable.
template <int NC, int WT>
void PrepareRows(const AttnChunkArgs& a, const void** k, const void** v) {
  const bool full = a.head_dim == a.padded_dim;
  for (int j = a.lane_begin; j < a.lane_end; ++j) {
    if (full && a.kv_dtype == WT) {
      k[j] = a.k_rows[j];
      v[j] = a.v_rows[j];
      continue;
    }
    float* kd = a.scratch + j * a.padded_dim;
    float* vd = a.scratch + kScratchVOffset(a.padded_dim) + j * a.padded_dim;
    if (NC > 0 && full && a.kv_dtype == kBF16) {
      WidenFullRow<NC, kBF16>(a.k_rows[j], kd);
      WidenFullRow<NC, kBF16>(a.v_rows[j], vd);
    } else if (NC > 0 && full) {
      WidenFullRow<NC, kF16>(a.k_rows[j], kd);
      WidenFullRow<NC, kF16>(a.v_rows[j], vd);
    } else {
      WidenRow(a.k_rows[j], a.kv_dtype, a.head_dim, a.padded_dim, kd);
      WidenRow(a.v_rows[j], a.kv_dtype, a.head_dim, a.padded_dim, vd);
    }
    k[j] = kd;
    v[j] = vd;
  }
  for (int j = 0; j < kAttnChunk; ++j) {
    if (j < a.lane_begin || j >= a.lane_end) {
      k[j] = k[a.lane_begin];
      v[j] = v[a.lane_begin];
    }
  }
}

// The query rows' lanes [jb, je) of this chunk (empty when jb >= je).
inline void Lanes(const AttnChunkArgs& a, int64_t t, int* jb, int* je) {
  const int64_t lo = a.first_key[t] > a.chunk_pos ? a.first_key[t] : a.chunk_pos;
  const int64_t hi = a.last_key[t] + 1 < a.chunk_pos + kAttnChunk ? a.last_key[t] + 1 : a.chunk_pos + kAttnChunk;
  *jb = static_cast<int>(lo - a.chunk_pos);
  *je = static_cast<int>(hi - a.chunk_pos);
}

// Three passes over the rows (scores, softmax, V), each row's steps in the
// shared order. Rows are independent within a pass, so the core overlaps
// their long dependency chains instead of waiting on one row at a time.
template <int NC, int WT>
void Attend(const AttnChunkArgs& a) {
  const void* k[kAttnChunk];
  const void* v[kAttnChunk];
  PrepareRows<NC, WT>(a, k, v);
  const int64_t nc = a.padded_dim / 16;
  const int64_t state_stride = kStateHeader + a.padded_dim;
  const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
  const __m512 scale = _mm512_set1_ps(a.scale);
  int jb, je;
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    Lanes(a, t, &jb, &je);
    if (jb >= je) continue;
    const __mmask16 valid = LaneMask(jb, je);
    for (int64_t row = t * a.group; row < (t + 1) * a.group; ++row) {
      const __m512 s = _mm512_mul_ps(Dot16<NC, WT>(a.q + row * a.padded_dim, k, nc), scale);
      _mm512_storeu_ps(a.scores + row * kAttnChunk, _mm512_mask_blend_ps(valid, neg_inf, s));
    }
  }
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    Lanes(a, t, &jb, &je);
    if (jb >= je) continue;
    for (int64_t row = t * a.group; row < (t + 1) * a.group; ++row) {
      float* st = a.state + row * state_stride;
      const __m512 s = _mm512_loadu_ps(a.scores + row * kAttnChunk);
      const float m_old = st[0];
      const float chunk_max = MaxTree(s);
      const float m_new = m_old > chunk_max ? m_old : chunk_max;
      const float alpha = _mm512_cvtss_f32(Exp(_mm512_set1_ps(m_old - m_new)));
      const __m512 e = Exp(_mm512_sub_ps(s, _mm512_set1_ps(m_new)));
      st[0] = m_new;
      st[1] = __builtin_fmaf(st[1], alpha, Tree(e));
      st[2] = alpha;
      _mm512_storeu_ps(a.scores + row * kAttnChunk, e);
    }
  }
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    Lanes(a, t, &jb, &je);
    if (jb >= je) continue;
    for (int64_t row = t * a.group; row < (t + 1) * a.group; ++row) {
      float* st = a.state + row * state_stride;
      if constexpr (NC > 0) {
        AccumulateV<NC, WT>(st + kStateHeader, 0, st[2], a.scores + row * kAttnChunk, v, jb, je);
      } else {
        AccumulateVAny(st + kStateHeader, nc, st[2], a.scores + row * kAttnChunk, v, jb, je);
      }
    }
  }
}

// With few query rows (decode: one token's group) BF16/F16 rows are widened
// in registers as each row uses them; with many (prefill) they are widened
// once into scratch and every row reads fp32. Widening is exact either way.
constexpr int64_t kMaxInRegisterRows = 4;

template <int NC>
void Dispatch(const AttnChunkArgs& a) {
  if (a.kv_dtype != kF32 && a.head_dim == a.padded_dim && a.num_tokens * a.group <= kMaxInRegisterRows) {
    return a.kv_dtype == kBF16 ? Attend<NC, kBF16>(a) : Attend<NC, kF16>(a);
  }
  return Attend<NC, kF32>(a);
}

}  // namespace

void AttendChunkAvx512(const AttnChunkArgs& a) {
  switch (a.padded_dim / 16) {
    case 1:
      return Dispatch<1>(a);
    case 2:
      return Dispatch<2>(a);
    case 3:
      return Dispatch<3>(a);
    case 4:
      return Dispatch<4>(a);
    case 5:
      return Dispatch<5>(a);
    case 6:
      return Dispatch<6>(a);
    case 8:
      return Dispatch<8>(a);
    default:
      return Attend<0, kF32>(a);
  }
}

}  // namespace tandem::kernels::cpu
