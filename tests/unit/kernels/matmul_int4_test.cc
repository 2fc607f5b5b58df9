// Tests for the W4A16 int4 matmul (int4_matmul.h): the rounding rule on
// hand-made groups (exact codes, zero points and scales: all-zero, constant,
// single-sign, ties, a padded last group) and on random rows against a
// transcription of the rule; PackInt4Weight / DequantizeInt4Row round trips
// and rejections; MatMulInt4 on every path against (a) the documented lane
// order transcribed here with scalar fmaf over the same dequantized values
// (equal bits), (b) the fp32 MatMul of the dequantized matrix at every ISA
// level (equal bits: the header promises exactly that order), and (c) a
// float64 computation of the same dequantized values within the fp32
// rounding bound; batch invariance (a row alone == the same row in batches
// of 1..64, on one thread and two) on odd shapes.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "engine/kernels/int4_matmul.h"
#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace tandem::kernels {
namespace {

std::vector<float> RandomVector(int64_t n, std::mt19937& rng, float sigma = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, sigma);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

WeightRef F32Ref(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t stride) {
  return {DType::kF32, w.data(), rows, cols, stride};
}

// The rule of int4_matmul.h for one group, written out as stated (fp32
// operations, rint to nearest even), independent of the kernel's vector code.
struct RefGroup {
  float scale = 0.0f;
  int zero = 0;
  std::vector<int> q;
};

RefGroup ReferenceGroup(const float* w, int64_t n, int64_t g) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  RefGroup out;
  out.q.assign(g, 0);
  const float scale = (hi - lo) / 15.0f;
  if (!(scale > 0.0f)) return out;
  out.scale = scale;
  out.zero = static_cast<int>(std::clamp(std::nearbyint(-lo / scale), 0.0f, 15.0f));
  for (int64_t i = 0; i < g; ++i) {
    const float v = i < n ? w[i] : 0.0f;  // the padded columns are w = 0
    out.q[i] = static_cast<int>(std::clamp(std::nearbyint(v / scale) + static_cast<float>(out.zero), 0.0f, 15.0f));
  }
  return out;
}

// deq(W) [rows][cols] read back through the struct's fields.
std::vector<float> Dequantized(const Int4Weight& w) {
  std::vector<float> out(w.rows * w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      const int64_t g = r * w.num_groups + c / w.group_size;
      out[r * w.cols + c] = static_cast<float>(int{w.Code(r, c)} - int{w.zeros[g]}) * w.scales[g];
    }
  }
  return out;
}

// The documented order: 16 lanes of fmaf in increasing k (0 past k), the
// pairwise tree, then + bias (or + 0).
std::vector<float> LaneOrderMatMul(const std::vector<float>& x, int64_t m, const std::vector<float>& deq, int64_t n,
                                   int64_t k, const float* bias) {
  std::vector<float> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      float lane[16] = {};
      for (int64_t c0 = 0; c0 < k; c0 += 16) {
        for (int l = 0; l < 16; ++l) {
          const int64_t c = c0 + l;
          lane[l] = std::fmaf(c < k ? x[i * k + c] : 0.0f, c < k ? deq[r * k + c] : 0.0f, lane[l]);
        }
      }
      for (int width = 8; width >= 1; width /= 2) {
        for (int l = 0; l < width; ++l) lane[l] = lane[l] + lane[l + width];
      }
      y[i * n + r] = lane[0] + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
  return y;
}

std::vector<Int4Path> Paths() {
  std::vector<Int4Path> out = {Int4Path::kScalar, Int4Path::kAvx2};
  if (DetectedCpuIsa() >= CpuIsa::kAvx512) out.push_back(Int4Path::kAvx512);
  return out;
}

const char* PathName(Int4Path p) {
  switch (p) {
    case Int4Path::kScalar:
      return "scalar";
    case Int4Path::kAvx2:
      return "avx2";
    case Int4Path::kAvx512:
      return "avx512";
  }
  return "?";
}

TEST(Int4GroupSizeTest, LargestOf128_64_32ThatDividesElse32) {
  EXPECT_EQ(Int4GroupSize(256), 128);
  EXPECT_EQ(Int4GroupSize(2048), 128);
  EXPECT_EQ(Int4GroupSize(576), 64);
  EXPECT_EQ(Int4GroupSize(192), 64);
  EXPECT_EQ(Int4GroupSize(96), 32);
  EXPECT_EQ(Int4GroupSize(200), 32);
  EXPECT_EQ(Int4GroupSize(7), 32);
}

// Row 0 (cols 96, groups of 32):
//   group 0: range [-3, 12] -> scale 1, zero 3, q = rint(w) + 3 (ties to even);
//   group 1: all zero -> scale 0, zero 0, q 0;
//   group 2: constant 0.75 (single sign, constant) -> zero 0, q 15.
// Row 1:
//   group 0: all negative, min -1.875 -> scale 0.125, zero 15;
//   group 1: range [-1, 2.75] -> scale 0.25, zero 4;
//   group 2: range [-0.3, 1.2] -> zero rint(0.3 / 0.1) = 3.
TEST(QuantizeWeightInt4Test, HandMadeGroupsGiveExactCodesZerosAndScales) {
  const int64_t cols = 96;
  std::vector<float> w(2 * cols, 0.0f);
  float* r0 = w.data();
  float* r1 = w.data() + cols;
  const float g0[] = {-3.0f, 12.0f, 0.5f, 1.5f, 2.5f, -2.5f, 7.4f, -0.5f};
  std::copy(std::begin(g0), std::end(g0), r0);
  std::fill(r0 + 64, r0 + 96, 0.75f);
  const float h0[] = {-1.875f, -0.5f, -0.0625f, -0.1875f};
  std::fill(r1, r1 + 32, -1.0f);
  std::copy(std::begin(h0), std::end(h0), r1);
  const float h1[] = {-1.0f, 2.75f, 0.125f, 0.375f};
  std::copy(std::begin(h1), std::end(h1), r1 + 32);
  const float h2[] = {-0.3f, 1.2f, 0.0f};
  std::copy(std::begin(h2), std::end(h2), r1 + 64);

  const Int4Weight q = QuantizeWeightInt4(F32Ref(w, 2, cols, cols));
  ASSERT_EQ(q.group_size, 32);
  ASSERT_EQ(q.num_groups, 3);
  ASSERT_EQ(q.padded_cols, 96);
  // Row 0.
  EXPECT_EQ(q.scales[0], 1.0f);
  EXPECT_EQ(q.zeros[0], 3);
  const int want0[] = {0, 15, 3, 5, 5, 1, 10, 3};  // rint: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2, -0.5 -> -0
  for (int c = 0; c < 8; ++c) EXPECT_EQ(q.Code(0, c), want0[c]) << c;
  for (int c = 8; c < 32; ++c) EXPECT_EQ(q.Code(0, c), 3) << c;  // w = 0 is exactly the zero point
  EXPECT_EQ(q.scales[1], 0.0f);
  EXPECT_EQ(q.zeros[1], 0);
  for (int c = 32; c < 64; ++c) EXPECT_EQ(q.Code(0, c), 0) << c;
  EXPECT_EQ(q.scales[2], 0.75f / 15.0f);
  EXPECT_EQ(q.zeros[2], 0);
  for (int c = 64; c < 96; ++c) EXPECT_EQ(q.Code(0, c), 15) << c;
  // Row 1.
  EXPECT_EQ(q.scales[3], 0.125f);
  EXPECT_EQ(q.zeros[3], 15);
  const int want1[] = {0, 11, 15, 13};  // -15, -4, rint(-0.5) = -0, rint(-1.5) = -2; plus 15
  for (int c = 0; c < 4; ++c) EXPECT_EQ(q.Code(1, c), want1[c]) << c;
  for (int c = 4; c < 32; ++c) EXPECT_EQ(q.Code(1, c), 7) << c;  // -1 / 0.125 = -8
  EXPECT_EQ(q.scales[4], 0.25f);
  EXPECT_EQ(q.zeros[4], 4);
  const int want2[] = {0, 15, 4, 6};  // -4, 11, rint(0.5) = 0, rint(1.5) = 2; plus 4
  for (int c = 0; c < 4; ++c) EXPECT_EQ(q.Code(1, 32 + c), want2[c]) << c;
  EXPECT_EQ(q.scales[5], (1.2f - -0.3f) / 15.0f);
  EXPECT_EQ(q.zeros[5], 3);
  EXPECT_EQ(q.Code(1, 64), 0);
  EXPECT_EQ(q.Code(1, 65), 15);
  EXPECT_EQ(q.Code(1, 66), 3);
  // Dequantized: exactly (q - zero) * scale; zero maps back to exactly 0.
  std::vector<float> row(cols);
  DequantizeInt4Row(q, 0, row.data());
  const float deq0[] = {-3.0f, 12.0f, 0.0f, 2.0f, 2.0f, -2.0f, 7.0f, 0.0f};
  for (int c = 0; c < 8; ++c) EXPECT_EQ(row[c], deq0[c]) << c;
  for (int c = 32; c < 64; ++c) EXPECT_EQ(row[c], 0.0f);
  DequantizeInt4Row(q, 1, row.data());
  EXPECT_EQ(row[0], -1.875f);
  EXPECT_EQ(row[1], -0.5f);
  EXPECT_EQ(row[32 + 1], 2.75f);
  EXPECT_EQ(row[66], 0.0f);
}

// cols 200: groups of 32, the last one holding columns 192..199 and padded
// to 224 with w = 0, which quantize to the zero point and dequantize to 0.
TEST(QuantizeWeightInt4Test, LastGroupIsZeroPadded) {
  const int64_t cols = 200;
  std::vector<float> w(cols, 1.0f);
  const float tail[] = {-2.0f, 5.5f, 0.25f, 1.0f, -0.75f, 3.0f, 0.0f, 2.0f};
  std::copy(std::begin(tail), std::end(tail), w.begin() + 192);
  const Int4Weight q = QuantizeWeightInt4(F32Ref(w, 1, cols, cols));
  ASSERT_EQ(q.num_groups, 7);
  ASSERT_EQ(q.padded_cols, 224);
  ASSERT_EQ(q.packed.size(), 112u);
  EXPECT_EQ(q.scales[6], 0.5f);  // (5.5 - -2) / 15
  EXPECT_EQ(q.zeros[6], 4);
  const int want[] = {0, 15, 4, 6, 2, 10, 4, 8};  // rint(0.5) = 0, rint(-1.5) = -2
  for (int c = 0; c < 8; ++c) EXPECT_EQ(q.Code(0, 192 + c), want[c]) << c;
  for (int64_t c = 200; c < 224; ++c) EXPECT_EQ(q.Code(0, c), 4) << c;
  // A group of constant 1.0: zero 0, q 15, dequantized to 15 * (1 / 15).
  EXPECT_EQ(q.zeros[0], 0);
  EXPECT_EQ(q.Code(0, 5), 15);
  std::vector<float> row(cols);
  DequantizeInt4Row(q, 0, row.data());
  EXPECT_EQ(row[5], 15.0f * (1.0f / 15.0f));
  EXPECT_EQ(row[192], -2.0f);
  EXPECT_EQ(row[193], 5.5f);
}

TEST(QuantizeWeightInt4Test, EveryDtypeAndStrideMatchesTheRule) {
  std::mt19937 rng(2);
  for (int64_t cols : {int64_t{256}, int64_t{192}, int64_t{96}, int64_t{70}, int64_t{13}}) {
    const int64_t rows = 11, stride = cols + 9;
    // A mean off zero makes single-sign groups common.
    const std::vector<float> values = RandomVector(rows * stride, rng, 0.05f, cols % 2 == 0 ? 0.0f : 0.06f);
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      std::vector<uint8_t> bytes(rows * stride * DTypeSize(dtype));
      std::vector<float> exact(rows * cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < stride; ++c) {
          // Columns past `cols` belong to another shard: huge, would show up.
          const float v = c < cols ? values[r * stride + c] : 1e6f;
          const int64_t at = r * stride + c;
          float e = v;
          if (dtype == DType::kF32) {
            std::memcpy(&bytes[at * 4], &v, 4);
          } else {
            const uint16_t h = dtype == DType::kBF16 ? FloatToBf16(v) : FloatToF16(v);
            std::memcpy(&bytes[at * 2], &h, 2);
            e = dtype == DType::kBF16 ? Bf16ToFloat(h) : F16ToFloat(h);
          }
          if (c < cols) exact[r * cols + c] = e;
        }
      }
      const Int4Weight w = QuantizeWeightInt4({dtype, bytes.data(), rows, cols, stride});
      const int64_t g = Int4GroupSize(cols);
      ASSERT_EQ(w.group_size, g);
      ASSERT_EQ(w.padded_cols, (cols + g - 1) / g * g);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t gi = 0; gi < w.num_groups; ++gi) {
          const int64_t c0 = gi * g;
          const RefGroup want = ReferenceGroup(exact.data() + r * cols + c0, std::min(g, cols - c0), g);
          ASSERT_EQ(w.scales[r * w.num_groups + gi], want.scale) << "cols " << cols << " row " << r;
          ASSERT_EQ(w.zeros[r * w.num_groups + gi], want.zero) << "cols " << cols << " row " << r;
          for (int64_t i = 0; i < g; ++i) {
            ASSERT_EQ(w.Code(r, c0 + i), want.q[i]) << "cols " << cols << " row " << r << " col " << c0 + i;
          }
        }
        // Round to nearest: every weight is within half a step of its value.
        std::vector<float> deq(cols);
        DequantizeInt4Row(w, r, deq.data());
        for (int64_t c = 0; c < cols; ++c) {
          const double step = w.scales[r * w.num_groups + c / g];
          EXPECT_NEAR(deq[c], exact[r * cols + c], 0.5 * step * (1 + 1e-5) + 1e-12);
        }
      }
    }
  }
}

TEST(PackInt4WeightTest, RoundTripsCodesScalesAndZeros) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> code(0, 15);
  for (int64_t group : {int64_t{32}, int64_t{64}, int64_t{128}}) {
    const int64_t rows = 5, cols = 160;  // 160 % 64 and % 128 != 0: a padded last group
    const int64_t groups = (cols + group - 1) / group;
    std::vector<uint8_t> q(rows * cols), zeros(rows * groups);
    for (uint8_t& v : q) v = static_cast<uint8_t>(code(rng));
    for (uint8_t& v : zeros) v = static_cast<uint8_t>(code(rng));
    const std::vector<float> scales = RandomVector(rows * groups, rng, 0.01f);  // negative scales allowed too
    absl::StatusOr<Int4Weight> w = PackInt4Weight(rows, cols, group, q.data(), scales.data(), zeros.data());
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_EQ(w->padded_cols, groups * group);
    std::vector<float> row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      DequantizeInt4Row(*w, r, row.data());
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t g = r * groups + c / group;
        ASSERT_EQ(w->Code(r, c), q[r * cols + c]);
        ASSERT_EQ(row[c], static_cast<float>(q[r * cols + c] - zeros[g]) * scales[g]) << r << "," << c;
      }
      for (int64_t c = cols; c < w->padded_cols; ++c) ASSERT_EQ(w->Code(r, c), zeros[r * groups + groups - 1]);
    }
  }
  // QuantizeWeightInt4's own codes, repacked, give back the same struct.
  const std::vector<float> values = RandomVector(7 * 200, rng);
  const Int4Weight a = QuantizeWeightInt4(F32Ref(values, 7, 200, 200));
  std::vector<uint8_t> codes(7 * 200);
  for (int64_t r = 0; r < 7; ++r) {
    for (int64_t c = 0; c < 200; ++c) codes[r * 200 + c] = a.Code(r, c);
  }
  absl::StatusOr<Int4Weight> b = PackInt4Weight(7, 200, a.group_size, codes.data(), a.scales.data(), a.zeros.data());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->packed, a.packed);
  EXPECT_EQ(b->scales, a.scales);
  EXPECT_EQ(b->zeros, a.zeros);
}

TEST(PackInt4WeightTest, RejectsBadGroupsCodesZerosAndScales) {
  std::vector<uint8_t> q(64, 1), zeros(2, 8);
  std::vector<float> scales(2, 0.5f);
  EXPECT_TRUE(PackInt4Weight(1, 64, 32, q.data(), scales.data(), zeros.data()).ok());
  EXPECT_EQ(PackInt4Weight(1, 64, 48, q.data(), scales.data(), zeros.data()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(PackInt4Weight(1, 64, 0, q.data(), scales.data(), zeros.data()).ok());
  EXPECT_FALSE(PackInt4Weight(1, 0, 32, q.data(), scales.data(), zeros.data()).ok());
  q[63] = 16;
  EXPECT_FALSE(PackInt4Weight(1, 64, 32, q.data(), scales.data(), zeros.data()).ok());
  q[63] = 15;
  zeros[1] = 16;
  EXPECT_FALSE(PackInt4Weight(1, 64, 32, q.data(), scales.data(), zeros.data()).ok());
  zeros[1] = 15;
  scales[0] = std::nanf("");
  EXPECT_FALSE(PackInt4Weight(1, 64, 32, q.data(), scales.data(), zeros.data()).ok());
}

struct Shape {
  int64_t m, n, k;
};

// k: a single padded group (1, 17, 31), 32 and one past, 96 (groups of 32),
// 200 (padded), 576 (groups of 64), 256 and 640 (128); n past the 24-row
// panel with edge tiles of every width (8, 6, 4 and 3 rows); m across the
// decode (<= 4) and prefill shapes and their tile edges.
const Shape kShapes[] = {{1, 1, 1},    {1, 7, 17},   {2, 25, 31},  {3, 26, 32},  {4, 27, 33},  {5, 29, 96},
                         {1, 53, 200}, {6, 30, 200}, {9, 24, 576}, {1, 97, 256}, {2, 50, 640}, {17, 31, 96},
                         {3, 45, 200}, {1, 9, 576}};

class MatMulInt4Test : public ::testing::Test {
 protected:
  void TearDown() override {
    SetCpuIsa(DetectedCpuIsa());
    omp_set_num_threads(omp_get_num_procs());
  }
};

TEST_F(MatMulInt4Test, EveryPathFollowsTheLaneOrderBitForBit) {
  std::mt19937 rng(4);
  for (const Shape& s : kShapes) {
    for (bool with_bias : {false, true}) {
      const std::vector<float> x = RandomVector(s.m * s.k, rng);
      const std::vector<float> wv = RandomVector(s.n * s.k, rng, 0.05f);
      const std::vector<float> bias = RandomVector(s.n, rng);
      const float* b = with_bias ? bias.data() : nullptr;
      const Int4Weight w = QuantizeWeightInt4(F32Ref(wv, s.n, s.k, s.k));
      const std::vector<float> deq = Dequantized(w);
      const std::vector<float> want = LaneOrderMatMul(x, s.m, deq, s.n, s.k, b);
      for (Int4Path path : Paths()) {
        std::vector<float> got(s.m * s.n);
        MatMulInt4On(path, x.data(), s.m, w, b, got.data());
        for (int64_t i = 0; i < s.m * s.n; ++i) {
          ASSERT_EQ(got[i], want[i]) << PathName(path) << " m=" << s.m << " n=" << s.n << " k=" << s.k << " i=" << i;
        }
      }
    }
  }
}

// Packed matrices whose last group is padded by whole 32-column blocks
// (group 128, cols 200: blocks 224..255 hold no column).
TEST_F(MatMulInt4Test, PackedGroupsLargerThanTheTailMatchTheLaneOrder) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> code(0, 15);
  const int64_t n = 30, k = 200, group = 128, groups = 2;
  std::vector<uint8_t> q(n * k), zeros(n * groups);
  for (uint8_t& v : q) v = static_cast<uint8_t>(code(rng));
  for (uint8_t& v : zeros) v = static_cast<uint8_t>(code(rng));
  const std::vector<float> scales = RandomVector(n * groups, rng, 0.01f);
  absl::StatusOr<Int4Weight> w = PackInt4Weight(n, k, group, q.data(), scales.data(), zeros.data());
  ASSERT_TRUE(w.ok());
  const std::vector<float> deq = Dequantized(*w);
  for (int64_t m : {1, 2, 7}) {
    const std::vector<float> x = RandomVector(m * k, rng);
    const std::vector<float> want = LaneOrderMatMul(x, m, deq, n, k, nullptr);
    for (Int4Path path : Paths()) {
      std::vector<float> got(m * n);
      MatMulInt4On(path, x.data(), m, *w, nullptr, got.data());
      for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(got[i], want[i]) << PathName(path) << " m=" << m << " i=" << i;
    }
  }
}

// The header's promise: the fp32 MatMul of the dequantized matrix, exactly,
// at every ISA level of the fp32 kernels.
TEST_F(MatMulInt4Test, EqualsFp32MatMulOfTheDequantizedMatrix) {
  std::mt19937 rng(6);
  for (const Shape& s : kShapes) {
    const std::vector<float> x = RandomVector(s.m * s.k, rng);
    const std::vector<float> wv = RandomVector(s.n * s.k, rng, 0.05f);
    const std::vector<float> bias = RandomVector(s.n, rng);
    const Int4Weight w = QuantizeWeightInt4(F32Ref(wv, s.n, s.k, s.k));
    const std::vector<float> deq = Dequantized(w);
    std::vector<float> got(s.m * s.n), want(s.m * s.n);
    MatMulInt4(x.data(), s.m, w, bias.data(), got.data());
    for (CpuIsa isa : {CpuIsa::kAvx2, DetectedCpuIsa()}) {
      SetCpuIsa(isa);
      MatMul(x.data(), s.m, F32Ref(deq, s.n, s.k, s.k), bias.data(), want.data());
      for (int64_t i = 0; i < s.m * s.n; ++i) {
        ASSERT_EQ(got[i], want[i]) << CpuIsaName(isa) << " m=" << s.m << " n=" << s.n << " k=" << s.k;
      }
    }
  }
}

// Against float64 over the same dequantized values. The bound: each lane is
// a chain of ceil(k / 16) fp32 roundings, the tree adds 4 and the bias 1, each
// at most u = 2^-24 relative to a partial sum bounded by sum |x w| (+ |bias|):
// |got - exact| <= (ceil(k / 16) + 5) * u * (sum |x w| + |bias|), to first order.
TEST_F(MatMulInt4Test, WithinFp32RoundingOfFloat64OverTheSameDequantizedValues) {
  std::mt19937 rng(7);
  for (const Shape& s : kShapes) {
    const std::vector<float> x = RandomVector(s.m * s.k, rng);
    const std::vector<float> wv = RandomVector(s.n * s.k, rng, 0.05f);
    const std::vector<float> bias = RandomVector(s.n, rng);
    const Int4Weight w = QuantizeWeightInt4(F32Ref(wv, s.n, s.k, s.k));
    const std::vector<float> deq = Dequantized(w);
    std::vector<float> got(s.m * s.n);
    MatMulInt4(x.data(), s.m, w, bias.data(), got.data());
    const double u = std::ldexp(1.0, -24);
    const double chain = static_cast<double>((s.k + 15) / 16 + 5);
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t r = 0; r < s.n; ++r) {
        double exact = bias[r], magnitude = std::fabs(bias[r]);
        for (int64_t c = 0; c < s.k; ++c) {
          const double p = double{x[i * s.k + c]} * double{deq[r * s.k + c]};
          exact += p;
          magnitude += std::fabs(p);
        }
        EXPECT_NEAR(got[i * s.n + r], exact, chain * u * magnitude * 1.001) << "k=" << s.k << " " << i << "," << r;
      }
    }
  }
}

TEST_F(MatMulInt4Test, ActivePathFollowsTheIsaCap) {
  SetCpuIsa(CpuIsa::kAvx2);
  EXPECT_EQ(ActiveInt4Path(), Int4Path::kAvx2);
  SetCpuIsa(DetectedCpuIsa());
  EXPECT_EQ(ActiveInt4Path(), DetectedCpuIsa() >= CpuIsa::kAvx512 ? Int4Path::kAvx512 : Int4Path::kAvx2);
}

TEST_F(MatMulInt4Test, RowAloneEqualsRowInAnyBatchOnOneAndTwoThreads) {
  std::mt19937 rng(8);
  const int64_t max_m = 64;
  for (const Shape& s : {Shape{0, 53, 96}, Shape{0, 29, 200}, Shape{0, 31, 576}}) {
    const std::vector<float> x = RandomVector(max_m * s.k, rng);
    const std::vector<float> wv = RandomVector(s.n * s.k, rng, 0.05f);
    const std::vector<float> bias = RandomVector(s.n, rng);
    const Int4Weight w = QuantizeWeightInt4(F32Ref(wv, s.n, s.k, s.k));
    for (Int4Path path : Paths()) {
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        std::vector<float> alone(max_m * s.n);
        for (int64_t i = 0; i < max_m; ++i) {
          MatMulInt4On(path, x.data() + i * s.k, 1, w, bias.data(), alone.data() + i * s.n);
        }
        for (int64_t m : {1, 2, 3, 5, 8, 16, 33, 64}) {
          std::vector<float> batched(m * s.n);
          MatMulInt4On(path, x.data(), m, w, bias.data(), batched.data());
          for (int64_t i = 0; i < m * s.n; ++i) {
            ASSERT_EQ(alone[i], batched[i]) << PathName(path) << " k=" << s.k << " threads=" << threads
                                            << " row " << i / s.n << " of " << m;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace tandem::kernels
