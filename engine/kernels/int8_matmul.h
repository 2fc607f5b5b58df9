// W8A8 int8 matmul (`--quantization int8`): weights quantized once at load,
// per output row, symmetric; activations quantized per token (row) at run
// time, symmetric; int32 dot products; one fp32 rescale per output.
//
// The rule, for weights and activations alike (QuantizeRowInt8):
//   scale = max|v| / 127 (fp32 division), q = rint(v / scale) (fp32
//   division, round to nearest even), clamped to [-127, 127]; a row of
//   zeros gets scale 0 and q = 0.
// The output: y[i][r] = float(acc) * (x_scale[i] * w_scale[r]) (+ bias[r]),
// acc = sum_k xq[i][k] * wq[r][k] in int32, each product and sum exact
// (|acc| <= 127^2 * cols < 2^31 for cols up to 133,000), and the two fp32
// products and the add rounded in that order (never fused).
//
// Because the sums are exact integers, every ISA path (AVX512-VNNI, AVX2,
// scalar) gives the same bits, and a token's result depends only on its own
// row: batch-invariant for any batch size, tiling and thread count.
// Thread-safety: pure functions over caller-owned buffers; MatMulInt8
// parallelises internally with OpenMP and keeps its scratch per thread.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/kernels/ops.h"

namespace tandem::kernels {

// Columns of a quantized weight row are zero-padded to a multiple of this
// (one 64-byte vector), so no kernel needs a tail.
inline constexpr int64_t kInt8ColAlign = 64;

// An int8 weight matrix owned in memory: [rows][padded_cols], row r holding
// the quantized values of W[r][0..cols) and zeros after.
struct Int8Weight {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t padded_cols = 0;       // cols rounded up to kInt8ColAlign
  std::vector<int8_t> data;      // [rows][padded_cols]
  std::vector<float> scales;     // [rows]: W[r][c] ~= data[r][c] * scales[r]
  std::vector<int32_t> row_sums; // [rows]: sum of data[r][:] (the VNNI kernel's offset correction)
};

// Quantizes `n` values of `v` by the rule above into `q`; returns the scale.
float QuantizeRowInt8(const float* v, int64_t n, int8_t* q);

// Quantizes `w` (any file dtype, any row stride: a tensor-parallel shard
// quantizes just its own rows and columns). Parallel over rows.
Int8Weight QuantizeWeightInt8(const WeightRef& w);

// An Int8Weight from values quantized elsewhere (a pre-quantized
// checkpoint's): `rows` x `cols` int8 at `q`, `row_stride` elements between
// rows (a tensor-parallel column slice), W[r][c] ~= q[r][c] * scales[r].
// Values may span the full int8 range (-128 too: every path's sums stay
// exact). Parallel over rows.
Int8Weight MakeInt8Weight(int64_t rows, int64_t cols, const int8_t* q, int64_t row_stride, const float* scales);

// y[m][w.rows] = the W8A8 product of x[m][w.cols] and w (+ bias[w.rows] when
// non-null). y must not alias x.
void MatMulInt8(const float* x, int64_t m, const Int8Weight& w, const float* bias, float* y);

// Which int32 dot-product kernel MatMulInt8 runs (all give the same bits).
enum class Int8Path : uint8_t {
  kScalar,      // portable C++
  kAvx2,        // int8 widened to int16, vpmaddwd
  kAvx512Vnni,  // vpdpbusd (u8 x s8) with the activation offset by 128
};

// The path MatMulInt8 takes on this CPU at the ActiveCpuIsa() level:
// AVX512-VNNI when the level is >= kAvx512 and the CPU has VNNI, else AVX2.
Int8Path ActiveInt8Path();

// MatMulInt8 on a given path; for tests and benchmarks. kAvx512Vnni on a
// CPU without it runs kAvx2 (the same bits).
void MatMulInt8On(Int8Path path, const float* x, int64_t m, const Int8Weight& w, const float* bias,
                  float* y);

// Whether this CPU (and OS) can run AVX512-VNNI. Detected once; thread-safe.
bool CpuHasAvx512Vnni();

}  // namespace tandem::kernels
