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

#include "engine/kernels/cpu/attention_avx512_lanes.h"
#include "engine/kernels/cpu/attention_kernels.h"

namespace tandem::kernels::cpu {
namespace {

using namespace attn512;  // NOLINT: this file is the primitives' only user
using tree512::SlotKey;
using tree512::TransposeTree;

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
      for (int c = 0; c < NC; ++c) acc[s] = _mm512_fmadd_ps(qv[c], Load16<NC, WT>(row, c), acc[s]);
    }
  } else {
#pragma GCC unroll 16
    for (int s = 0; s < kAttnChunk; ++s) acc[s] = _mm512_setzero_ps();
    for (int64_t c = 0; c < nc; ++c) {
      const __m512 qv = _mm512_loadu_ps(q + 16 * c);
#pragma GCC unroll 16
      for (int s = 0; s < kAttnChunk; ++s) {
        acc[s] = _mm512_fmadd_ps(qv, Load16<0, kF32>(rows[SlotKey(s)], c), acc[s]);
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
    for (int c = 0; c < NC; ++c) o[c] = _mm512_fmadd_ps(w, Load16<NC, WT>(rows[j], col / 16 + c), o[c]);
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

// Widens (exactly) and zero-pads one row of head_dim elements to padded_dim
// floats: BF16 in pair-split order, other types in element order.
void WidenRow(const void* src, int type, int64_t head_dim, int64_t padded_dim, float* dst) {
  int64_t d = 0;
  if (type == kBF16) {
    for (; d + 32 <= padded_dim; d += 32) {
      const int64_t n = head_dim - d < 32 ? (head_dim - d > 0 ? head_dim - d : 0) : 32;
      const __mmask32 mask = static_cast<__mmask32>(n == 32 ? 0xffffffffu : (1u << n) - 1u);
      const __m512i x = _mm512_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(src) + d);
      _mm512_storeu_ps(dst + d, Bf16Evens(x));
      _mm512_storeu_ps(dst + d + 16, Bf16Odds(x));
    }
  }
  for (; d < padded_dim; d += 16) {
    const int64_t n = head_dim - d < 16 ? (head_dim - d > 0 ? head_dim - d : 0) : 16;
    const __mmask16 mask = LaneMask(0, static_cast<int>(n));
    __m512 v;
    if (type == kF32) {
      v = _mm512_maskz_loadu_ps(mask, static_cast<const float*>(src) + d);
    } else if (type == kI8 || type == kF8) {
      // Masked-off bytes read as zero codes, which widen to zero.
      const __m128i b = _mm_maskz_loadu_epi8(mask, static_cast<const uint8_t*>(src) + d);
      v = type == kI8 ? WidenCodes16<kI8>(b) : WidenCodes16<kF8>(b);
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
  for (int c = 0; c < NC; ++c) _mm512_storeu_ps(dst + 16 * c, Load16<NC, WT>(src, c));
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
    } else if (NC > 0 && full && a.kv_dtype == kF16) {
      WidenFullRow<NC, kF16>(a.k_rows[j], kd);
      WidenFullRow<NC, kF16>(a.v_rows[j], vd);
    } else if (NC > 0 && full && a.kv_dtype == kI8) {
      WidenFullRow<NC, kI8>(a.k_rows[j], kd);
      WidenFullRow<NC, kI8>(a.v_rows[j], vd);
    } else if (NC > 0 && full && a.kv_dtype == kF8) {
      WidenFullRow<NC, kF8>(a.k_rows[j], kd);
      WidenFullRow<NC, kF8>(a.v_rows[j], vd);
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
  const __m512 k_mul = _mm512_loadu_ps(a.k_mul);
  const __m512 v_mul = _mm512_loadu_ps(a.v_mul);
  int jb, je;
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    Lanes(a, t, &jb, &je);
    if (jb >= je) continue;
    const __mmask16 valid = LaneMask(jb, je);
    for (int64_t row = t * a.group; row < (t + 1) * a.group; ++row) {
      const __m512 s = _mm512_mul_ps(Dot16<NC, WT>(a.q + row * a.padded_dim, k, nc), k_mul);
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
      _mm512_storeu_ps(a.scores + row * kAttnChunk, _mm512_mul_ps(e, v_mul));
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

// --- One query token against a BF16 (or, below, int8/fp8) chunk (decode): the token's R query
// rows (R <= 4 of its GQA group) share every widened K and V row, so a row
// is loaded and widened once for all of them rather than once per query
// head. Same numerics as Attend: per row, the same fma chains in the same
// order and the same tree (TransposeTree's first two levels run per group
// of 4 slots, which is the same pairs in the same order).

// Accumulators of 4 slots -> the tree's first two levels: lane SlotKey(s)
// of the result holds slots 4i..4i+3's partial sums, as u[i] in TransposeTree.
inline __m512 TreeTwoLevels(__m512 x0, __m512 x1, __m512 x2, __m512 x3) {
  const __m512 t0 = _mm512_add_ps(_mm512_shuffle_f32x4(x0, x1, 0x44), _mm512_shuffle_f32x4(x0, x1, 0xEE));
  const __m512 t1 = _mm512_add_ps(_mm512_shuffle_f32x4(x2, x3, 0x44), _mm512_shuffle_f32x4(x2, x3, 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(t0, t1, 0x88), _mm512_shuffle_f32x4(t0, t1, 0xDD));
}

// TransposeTree's last two levels over the four partial results.
inline __m512 TreeLastLevels(const __m512* u) {
  __m512 v[2];
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    const __m512d a = _mm512_castps_pd(u[2 * i]), b = _mm512_castps_pd(u[2 * i + 1]);
    v[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  return _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Scores of query rows q[0..R) (padded_dim = 16 NC floats each, pair-split
// order) against the 16 BF16 rows k (by lane), each scaled, as lanes 0..15.
template <int NC, int R>
inline void ScoresBf16(const float* const* q, const void* const* k, __m512 scale, __m512* out) {
  constexpr int kGroups = NC / 2;  // full pair groups; an odd NC leaves a 16-element tail
  __m512 u[R][4];
#pragma GCC unroll 4
  for (int quad = 0; quad < 4; ++quad) {
    __m512 acc[R][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const void* row = k[SlotKey(4 * quad + i)];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][i] = _mm512_setzero_ps();
#pragma GCC unroll 8
      for (int g = 0; g < kGroups; ++g) {
        const __m512i x = LoadPairGroup(row, g);
        const __m512 ev = Bf16Evens(x), od = Bf16Odds(x);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          acc[r][i] = _mm512_fmadd_ps(_mm512_loadu_ps(q[r] + 32 * g), ev, acc[r][i]);
          acc[r][i] = _mm512_fmadd_ps(_mm512_loadu_ps(q[r] + 32 * g + 16), od, acc[r][i]);
        }
      }
      if constexpr (NC % 2 == 1) {
        const __m512 w = Widen16<kBF16>(static_cast<const uint16_t*>(row) + 16 * (NC - 1));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) acc[r][i] = _mm512_fmadd_ps(_mm512_loadu_ps(q[r] + 16 * (NC - 1)), w, acc[r][i]);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) u[r][quad] = TreeTwoLevels(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) out[r] = _mm512_mul_ps(TreeLastLevels(u[r]), scale);
}

// o[r] (R rows of 16 * C floats starting at position 16 * c0) = o * alpha[r],
// then += e[r][j] * v_j over keys j in [jb, je), in j order. C even: c0 and
// C cover whole pair groups; C == 1: the 16-element tail (c0 == NC - 1).
template <int NC, int R, int C>
inline void AccumulateVBf16(float* const* acc, int c0, const float* alpha, const float* const* e,
                            const void* const* v, int jb, int je) {
  __m512 o[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m512 av = _mm512_set1_ps(alpha[r]);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) o[r][c] = _mm512_mul_ps(_mm512_loadu_ps(acc[r] + 16 * (c0 + c)), av);
  }
  for (int j = jb; j < je; ++j) {
    __m512 w[C];
    if constexpr (C == 1) {
      w[0] = Widen16<kBF16>(static_cast<const uint16_t*>(v[j]) + 16 * c0);
    } else {
#pragma GCC unroll 4
      for (int c = 0; c < C; c += 2) {
        const __m512i x = LoadPairGroup(v[j], (c0 + c) / 2);
        w[c] = Bf16Evens(x);
        w[c + 1] = Bf16Odds(x);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(e[r][j]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) o[r][c] = _mm512_fmadd_ps(b, w[c], o[r][c]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(acc[r] + 16 * (c0 + c), o[r][c]);
  }
}

// The same for one-byte code rows (int8, fp8; WT): each 16-column piece of
// a K row is widened once (Load16) for all R query rows, in element order,
// so the fma chains are Dot16's and the tree TransposeTree's.
template <int NC, int R, int WT>
inline void ScoresCodes(const float* const* q, const void* const* k, __m512 k_mul, __m512* out) {
  __m512 u[R][4];
#pragma GCC unroll 4
  for (int quad = 0; quad < 4; ++quad) {
    __m512 acc[R][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const void* row = k[SlotKey(4 * quad + i)];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][i] = _mm512_setzero_ps();
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        const __m512 w = Load16<NC, WT>(row, c);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) acc[r][i] = _mm512_fmadd_ps(_mm512_loadu_ps(q[r] + 16 * c), w, acc[r][i]);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) u[r][quad] = TreeTwoLevels(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) out[r] = _mm512_mul_ps(TreeLastLevels(u[r]), k_mul);
}

// AccumulateVBf16 for code rows: columns [16 c0, 16 (c0 + C)), each V
// piece widened once for all R rows; the fmas are AccumulateV's.
template <int NC, int R, int C, int WT>
inline void AccumulateVCodes(float* const* acc, int c0, const float* alpha, const float* const* e,
                             const void* const* v, int jb, int je) {
  __m512 o[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m512 av = _mm512_set1_ps(alpha[r]);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) o[r][c] = _mm512_mul_ps(_mm512_loadu_ps(acc[r] + 16 * (c0 + c)), av);
  }
  for (int j = jb; j < je; ++j) {
    __m512 w[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) w[c] = Load16<NC, WT>(v[j], c0 + c);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(e[r][j]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) o[r][c] = _mm512_fmadd_ps(b, w[c], o[r][c]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(acc[r] + 16 * (c0 + c), o[r][c]);
  }
}

// Query rows [row0, row0 + R) of a one-token chunk call, all with lanes
// [jb, je), of WT rows (BF16 or one-byte codes).
template <int NC, int R, int WT>
void AttendRows(const AttnChunkArgs& a, const void* const* k, const void* const* v, int64_t row0, int jb,
                int je) {
  const int64_t state_stride = kStateHeader + a.padded_dim;
  const float* q[R];
  float* st[R];
  float* acc[R];
  const float* e[R];
  float alpha[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    q[r] = a.q + (row0 + r) * a.padded_dim;
    st[r] = a.state + (row0 + r) * state_stride;
    acc[r] = st[r] + kStateHeader;
    e[r] = a.scores + (row0 + r) * kAttnChunk;
  }
  __m512 s[R];
  // k_mul is the scale in every lane for BF16 rows (attention_kernels.h).
  if constexpr (WT == kBF16) {
    ScoresBf16<NC, R>(q, k, _mm512_loadu_ps(a.k_mul), s);
  } else {
    ScoresCodes<NC, R, WT>(q, k, _mm512_loadu_ps(a.k_mul), s);
  }
  const __m512 v_mul = _mm512_loadu_ps(a.v_mul);
  const __mmask16 valid = LaneMask(jb, je);
  const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m512 sr = _mm512_mask_blend_ps(valid, neg_inf, s[r]);
    const float m_old = st[r][0];
    const float chunk_max = MaxTree(sr);
    const float m_new = m_old > chunk_max ? m_old : chunk_max;
    alpha[r] = _mm512_cvtss_f32(Exp(_mm512_set1_ps(m_old - m_new)));
    const __m512 ex = Exp(_mm512_sub_ps(sr, _mm512_set1_ps(m_new)));
    st[r][0] = m_new;
    st[r][1] = __builtin_fmaf(st[r][1], alpha[r], Tree(ex));
    st[r][2] = alpha[r];
    _mm512_storeu_ps(a.scores + (row0 + r) * kAttnChunk, _mm512_mul_ps(ex, v_mul));
  }
  // Column blocks of at most 16 accumulators (BF16: whole pair groups each).
  constexpr int kBlock = R == 1 ? 8 : R == 2 ? 8 : 4;
  if constexpr (WT == kBF16) {
    int c0 = 0;
    constexpr int kPaired = NC / 2 * 2;
    for (; c0 + kBlock <= kPaired; c0 += kBlock) AccumulateVBf16<NC, R, kBlock>(acc, c0, alpha, e, v, jb, je);
    for (; c0 < kPaired; c0 += 2) AccumulateVBf16<NC, R, 2>(acc, c0, alpha, e, v, jb, je);
    if constexpr (NC % 2 == 1) AccumulateVBf16<NC, R, 1>(acc, NC - 1, alpha, e, v, jb, je);
  } else {
    // Constant bounds (c0 is never carried between the loops): GCC cannot
    // bound a carried c0 and warns about offsets that cannot happen.
    constexpr int kWhole = NC / kBlock * kBlock;
    for (int b = 0; b < kWhole; b += kBlock) AccumulateVCodes<NC, R, kBlock, WT>(acc, b, alpha, e, v, jb, je);
    for (int b = kWhole; b < NC; ++b) AccumulateVCodes<NC, R, 1, WT>(acc, b, alpha, e, v, jb, je);
  }
}

// A one-token chunk of full-width WT rows (BF16 or codes): the token's group
// in slices of at most 4 rows.
template <int NC, int WT>
void AttendOneToken(const AttnChunkArgs& a) {
  const void* k[kAttnChunk];
  const void* v[kAttnChunk];
  for (int j = 0; j < kAttnChunk; ++j) {
    const int from = j < a.lane_begin || j >= a.lane_end ? a.lane_begin : j;  // unread lanes alias a read row
    k[j] = a.k_rows[from];
    v[j] = a.v_rows[from];
  }
  int jb, je;
  Lanes(a, 0, &jb, &je);
  if (jb >= je) return;
  int64_t row = 0;
  for (; row + 4 <= a.group; row += 4) AttendRows<NC, 4, WT>(a, k, v, row, jb, je);
  switch (a.group - row) {
    case 3:
      return AttendRows<NC, 3, WT>(a, k, v, row, jb, je);
    case 2:
      return AttendRows<NC, 2, WT>(a, k, v, row, jb, je);
    case 1:
      return AttendRows<NC, 1, WT>(a, k, v, row, jb, je);
    default:
      return;
  }
}

// With one query token (decode) BF16 and code rows are widened in registers
// once for the token's whole group; with few query rows F16 rows are widened
// in registers as each row uses them; with many (prefill) rows are widened
// once into scratch and every row reads fp32. Widening is exact either way.
constexpr int64_t kMaxInRegisterRows = 4;

template <int NC>
void Dispatch(const AttnChunkArgs& a) {
  const bool full = a.head_dim == a.padded_dim;
  if (full && a.num_tokens == 1) {
    if (a.kv_dtype == kBF16) return AttendOneToken<NC, kBF16>(a);
    if (a.kv_dtype == kI8) return AttendOneToken<NC, kI8>(a);
    if (a.kv_dtype == kF8) return AttendOneToken<NC, kF8>(a);
  }
  if (a.kv_dtype != kF32 && full && a.num_tokens * a.group <= kMaxInRegisterRows) {
    switch (a.kv_dtype) {
      case kBF16:
        return Attend<NC, kBF16>(a);
      case kF16:
        return Attend<NC, kF16>(a);
      case kI8:
        return Attend<NC, kI8>(a);
      default:
        return Attend<NC, kF8>(a);
    }
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
