// The int4 rule of int4_matmul.h (QuantizeWeightInt4), the packing of codes
// decided elsewhere (PackInt4Weight) and the dequantization of a row.
//
// Vector and scalar forms of every step are the same correctly rounded fp32
// operations (division, rint to nearest even, subtraction, product), so the
// 8-wide loops here agree with the rule element for element.
// Thread-safety: pure functions; QuantizeWeightInt4 runs an OpenMP team.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/kernels/int4_matmul.h"

namespace tandem::kernels {
namespace {

float HorizontalMin(__m256 v) {
  alignas(32) float l[8];
  _mm256_store_ps(l, v);
  return std::min({l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]});
}

float HorizontalMax(__m256 v) {
  alignas(32) float l[8];
  _mm256_store_ps(l, v);
  return std::max({l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]});
}

// Quantizes one group of `g` values (a multiple of 32) into codes q[0..g);
// writes its scale and zero point.
void QuantizeGroup(const float* w, int64_t g, uint8_t* q, float* scale_out, uint8_t* zero_out) {
  __m256 lo8 = _mm256_setzero_ps();  // starting at 0 is the min(0, .) / max(0, .) of the rule
  __m256 hi8 = _mm256_setzero_ps();
  for (int64_t i = 0; i < g; i += 8) {
    const __m256 v = _mm256_loadu_ps(w + i);
    lo8 = _mm256_min_ps(lo8, v);
    hi8 = _mm256_max_ps(hi8, v);
  }
  const float lo = HorizontalMin(lo8);
  const float hi = HorizontalMax(hi8);
  const float scale = (hi - lo) / 15.0f;
  if (!(scale > 0.0f)) {
    *scale_out = 0.0f;
    *zero_out = 0;
    std::memset(q, 0, static_cast<size_t>(g));
    return;
  }
  const float zero = std::clamp(std::nearbyint(-lo / scale), 0.0f, 15.0f);
  *scale_out = scale;
  *zero_out = static_cast<uint8_t>(zero);
  const __m256 s8 = _mm256_set1_ps(scale);
  const __m256 z8 = _mm256_set1_ps(zero);
  const __m256 top = _mm256_set1_ps(15.0f);
  for (int64_t i = 0; i < g; i += 8) {
    const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(w + i), s8),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 c = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, z8), _mm256_setzero_ps()), top);
    alignas(32) int32_t codes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(codes), _mm256_cvtps_epi32(c));
    for (int j = 0; j < 8; ++j) q[i + j] = static_cast<uint8_t>(codes[j]);
  }
}

// Packs one row of codes q[0..padded_cols) into the layout of int4_matmul.h.
void PackRow(const uint8_t* q, int64_t padded_cols, uint8_t* dst) {
  for (int64_t b = 0; b < padded_cols; b += kInt4Block) {
    for (int64_t i = 0; i < 16; ++i) {
      dst[b / 2 + i] = static_cast<uint8_t>(q[b + i] | (q[b + 16 + i] << 4));
    }
  }
}

Int4Weight Shape(int64_t rows, int64_t cols, int64_t group_size) {
  Int4Weight out;
  out.rows = rows;
  out.cols = cols;
  out.group_size = group_size;
  out.num_groups = (cols + group_size - 1) / group_size;
  out.padded_cols = out.num_groups * group_size;
  out.packed.assign(static_cast<size_t>(rows * out.RowBytes()), 0);
  out.scales.assign(static_cast<size_t>(rows * out.num_groups), 0.0f);
  out.zeros.assign(static_cast<size_t>(rows * out.num_groups), 0);
  return out;
}

}  // namespace

int64_t Int4GroupSize(int64_t cols) {
  if (cols % 128 == 0) return 128;
  if (cols % 64 == 0) return 64;
  return 32;
}

Int4Weight QuantizeWeightInt4(const WeightRef& w) {
  Int4Weight out = Shape(w.rows, w.cols, Int4GroupSize(w.cols));
  WeightRef ref = w;
  if (ref.row_stride <= 0) ref.row_stride = w.cols;
  const int64_t g = out.group_size;
#pragma omp parallel
  {
    // The row zero-padded to padded_cols (the padding rule), and its codes.
    std::vector<float> row(static_cast<size_t>(out.padded_cols), 0.0f);
    std::vector<uint8_t> q(static_cast<size_t>(out.padded_cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < w.rows; ++r) {
      ConvertToFloat(ref.dtype, ref.RowBytes(r), w.cols, row.data());
      for (int64_t gi = 0; gi < out.num_groups; ++gi) {
        const size_t at = static_cast<size_t>(r * out.num_groups + gi);
        QuantizeGroup(row.data() + gi * g, g, q.data() + gi * g, &out.scales[at], &out.zeros[at]);
      }
      PackRow(q.data(), out.padded_cols, out.packed.data() + r * out.RowBytes());
    }
  }
  return out;
}

absl::StatusOr<Int4Weight> PackInt4Weight(int64_t rows, int64_t cols, int64_t group_size, const uint8_t* q,
                                          const float* scales, const uint8_t* zeros) {
  if (rows < 0 || cols <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("int4 weight of ", rows, " x ", cols, ": bad shape"));
  }
  if (group_size <= 0 || group_size % kInt4Block != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("int4 group size ", group_size, ": must be a positive multiple of ", kInt4Block));
  }
  Int4Weight out = Shape(rows, cols, group_size);
  const int64_t groups = out.num_groups;
  for (int64_t i = 0; i < rows * groups; ++i) {
    if (zeros[i] > 15) {
      return absl::InvalidArgumentError(absl::StrCat("int4 zero point ", int{zeros[i]}, " at row ", i / groups,
                                                     " group ", i % groups, ": must be in 0..15"));
    }
    if (!std::isfinite(scales[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("int4 scale ", scales[i], " at row ", i / groups, " group ", i % groups, ": not finite"));
    }
  }
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (q[i] > 15) {
      return absl::InvalidArgumentError(
          absl::StrCat("int4 code ", int{q[i]}, " at row ", i / cols, " column ", i % cols, ": must be in 0..15"));
    }
  }
  std::copy_n(scales, rows * groups, out.scales.begin());
  std::copy_n(zeros, rows * groups, out.zeros.begin());
  std::vector<uint8_t> row(static_cast<size_t>(out.padded_cols));
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(q + r * cols, cols, row.begin());
    // The missing columns of a last partial group: q = zero, so they dequantize to 0.
    std::fill(row.begin() + cols, row.end(), zeros[r * groups + groups - 1]);
    PackRow(row.data(), out.padded_cols, out.packed.data() + r * out.RowBytes());
  }
  return out;
}

void DequantizeInt4Row(const Int4Weight& w, int64_t row, float* out) {
  for (int64_t c = 0; c < w.cols; ++c) {
    const size_t at = static_cast<size_t>(row * w.num_groups + c / w.group_size);
    out[c] = static_cast<float>(int{w.Code(row, c)} - int{w.zeros[at]}) * w.scales[at];
  }
}

}  // namespace tandem::kernels
