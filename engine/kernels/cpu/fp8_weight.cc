// Fp8Weight construction (fp8_matmul.h): quantizing a float matrix by the
// rule, adopting an FP8 checkpoint's codes and scales, and dequantizing a row.
// Load-time code: scalar, exact by construction (FloatToE4M3 is the
// reference codec), parallel over rows.
// Thread-safety: pure functions.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/kernels/fp8_matmul.h"
#include "engine/model/dtype.h"

namespace tandem::kernels {
namespace {

int64_t PaddedCols(int64_t cols) { return (cols + kFp8ColAlign - 1) / kFp8ColAlign * kFp8ColAlign; }

Fp8Weight Empty(int64_t rows, int64_t cols) {
  Fp8Weight out;
  out.rows = rows;
  out.cols = cols;
  out.padded_cols = PaddedCols(cols);
  out.codes.assign(static_cast<size_t>(rows * out.padded_cols), 0);
  out.scales.assign(static_cast<size_t>(rows), 0.0f);
  return out;
}

}  // namespace

float QuantizeRowFp8(const float* v, int64_t n, uint8_t* codes) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  const float scale = amax / kE4M3Max;
  if (!(scale > 0.0f)) {  // all zeros (or max|v| below 448 * FLT_TRUE_MIN)
    std::memset(codes, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  for (int64_t i = 0; i < n; ++i) codes[i] = FloatToE4M3(v[i] / scale);
  return scale;
}

Fp8Weight QuantizeWeightFp8(const WeightRef& w) {
  Fp8Weight out = Empty(w.rows, w.cols);
  WeightRef ref = w;
  if (ref.row_stride <= 0) ref.row_stride = w.cols;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(w.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < w.rows; ++r) {
      ConvertToFloat(ref.dtype, ref.RowBytes(r), w.cols, row.data());
      out.scales[r] = QuantizeRowFp8(row.data(), w.cols, out.codes.data() + r * out.padded_cols);
    }
  }
  return out;
}

absl::StatusOr<Fp8Weight> MakeFp8Weight(int64_t rows, int64_t cols, const uint8_t* codes, int64_t row_stride,
                                        const float* scales) {
  if (rows < 0 || cols < 0 || row_stride < cols || (rows > 0 && cols > 0 && (codes == nullptr || scales == nullptr))) {
    return absl::InvalidArgumentError(absl::StrCat("fp8 weight [", rows, "][", cols, "] with row stride ", row_stride,
                                                   ": inconsistent sizes or missing data"));
  }
  Fp8Weight out = Empty(rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float s = scales[r];
    if (!std::isfinite(s) || std::fabs(s) > 0x1p119f) {
      return absl::InvalidArgumentError(
          absl::StrFormat("fp8 weight row %d: scale %g must be finite and at most 2^119 in magnitude", r, s));
    }
    out.scales[r] = s;
    const uint8_t* src = codes + r * row_stride;
    for (int64_t c = 0; c < cols; ++c) {
      if ((src[c] & 0x7f) == 0x7f) {
        return absl::InvalidArgumentError(
            absl::StrFormat("fp8 weight row %d column %d: E4M3 NaN code 0x%02X", r, c, src[c]));
      }
    }
    std::memcpy(out.codes.data() + r * out.padded_cols, src, static_cast<size_t>(cols));
  }
  return out;
}

void DequantizeFp8Row(const Fp8Weight& w, int64_t row, float* out) {
  const uint8_t* codes = w.codes.data() + row * w.padded_cols;
  const float scale = w.scales[row];
  for (int64_t c = 0; c < w.cols; ++c) out[c] = E4M3ToFloat(codes[c]) * scale;
}

}  // namespace tandem::kernels
