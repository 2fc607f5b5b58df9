// Tests for the W8A16 FP8 matmul (fp8_matmul.h): the quantization rule on
// hand-made rows (exact codes and scales) and against a float64
// transcription with a brute-force nearest-code search; the in-register
// widening over all 256 codes against a decode written from the E4M3
// definition; MatMulFp8 bit for bit against a scalar transcription of the
// documented order and against fp32 MatMul over the dequantized codes, and
// within a stated fp32 bound of float64; every path the same bits; batch
// invariance (a row alone == the same row in batches of m in {1, 2, 3, 5, 8,
// 16, 33, 64}, on one thread and two); odd shapes; MakeFp8Weight's errors
// and round trip.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "engine/kernels/fp8_matmul.h"
#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"
#include "tests/testing/assert_ok.h"

namespace tandem::kernels {
namespace {

// E4M3 from its definition (bias 7, 3 mantissa bits, subnormals m * 2^-9).
double DecodeE4M3(uint8_t c) {
  const int e = (c >> 3) & 15, m = c & 7;
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(1.0 + m / 8.0, e - 7);
  return (c & 0x80) ? -mag : mag;
}

bool IsNanCode(uint8_t c) { return (c & 0x7f) == 0x7f; }

// The nearest finite code to v by search over all codes (ties: the even
// code, i.e. even mantissa), saturating at +-448; the sign of zero kept.
uint8_t NearestCode(double v) {
  const uint8_t sign = std::signbit(v) ? 0x80 : 0x00;
  const double a = std::fabs(v);
  uint8_t best = 0;
  double best_d = a;
  for (int c = 1; c < 0x7f; ++c) {
    const double d = std::fabs(a - DecodeE4M3(static_cast<uint8_t>(c)));
    if (d < best_d || (d == best_d && (c & 1) == 0)) {
      best = static_cast<uint8_t>(c);
      best_d = d;
    }
  }
  return sign | best;
}

// The rule in float64: each fp32 division as a float64 quotient of the two
// floats rounded to float (which is the correctly rounded fp32 quotient).
struct RefRow {
  float scale = 0.0f;
  std::vector<uint8_t> codes;
};

RefRow ReferenceQuantize(const float* v, int64_t n) {
  double amax = 0.0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(static_cast<double>(v[i])));
  RefRow out;
  out.scale = static_cast<float>(amax / 448.0);
  out.codes.assign(n, 0);
  if (out.scale == 0.0f) return out;
  for (int64_t i = 0; i < n; ++i) {
    out.codes[i] = NearestCode(static_cast<float>(static_cast<double>(v[i]) / out.scale));
  }
  return out;
}

std::vector<float> RandomVector(int64_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

WeightRef F32Ref(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t stride) {
  return {DType::kF32, w.data(), rows, cols, stride};
}

std::vector<Fp8Path> Paths() {
  std::vector<Fp8Path> out = {Fp8Path::kAvx2};
  if (DetectedCpuIsa() >= CpuIsa::kAvx512) out.push_back(Fp8Path::kAvx512);
  return out;
}

const char* PathName(Fp8Path p) { return p == Fp8Path::kAvx512 ? "avx512" : "avx2"; }

// The documented arithmetic transcribed in scalar code: 16 lanes of fmas in
// increasing k (zero-padded last group), the pairwise lane tree, then
// (scale * 2^8) * S and + bias as two roundings.
std::vector<float> ReferenceMatMul(const std::vector<float>& x, int64_t m, const Fp8Weight& w, const float* bias) {
  const int64_t k = w.cols, n = w.rows;
  std::vector<float> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      float lanes[16] = {};
      for (int64_t k0 = 0; k0 < k; k0 += 16) {
        for (int l = 0; l < 16; ++l) {
          const int64_t c = k0 + l;
          const float xv = c < k ? x[i * k + c] : 0.0f;
          const float e = c < k ? static_cast<float>(DecodeE4M3(w.codes[r * w.padded_cols + c]) / 256.0) : 0.0f;
          lanes[l] = std::fmaf(xv, e, lanes[l]);
        }
      }
      for (int half = 8; half >= 1; half /= 2) {
        for (int l = 0; l < half; ++l) lanes[l] = lanes[l] + lanes[l + half];
      }
      const float scaled = lanes[0] * (w.scales[r] * 256.0f);
      y[i * n + r] = bias != nullptr ? scaled + bias[r] : scaled;
    }
  }
  return y;
}

struct Shape {
  int64_t m, n, k;
};

// k below, at and past 16 and 64 with tails; n past the 24-row panel with
// every edge-tile width of the 6- and 3-row tiles; m past the 4- and 2-row
// tiles (and so through both the streaming and the widened-panel kernels).
const Shape kShapes[] = {{1, 1, 1},     {1, 7, 15},    {3, 25, 16},  {5, 30, 65},  {2, 49, 130},
                         {17, 50, 200}, {9, 24, 576},  {1, 97, 1536}, {2, 27, 100}, {3, 28, 129},
                         {6, 29, 191},  {7, 53, 320},  {4, 31, 64},  {33, 13, 47}};

TEST(QuantizeRowFp8Test, HandMadeRowsGiveExactCodesAndScales) {
  // max 448: scale exactly 1, codes are the values' own encodings: 448,
  // -224, 1, 0.5, 3, 17 (a tie: even mantissa 16), 19 (a tie: 20), 2^-9 (the
  // smallest subnormal), 2^-10 (a tie: 0), 1.5 * 2^-9 (a tie: 2 * 2^-9), -0.
  const std::vector<float> v = {448.0f, -224.0f, 1.0f,    0.5f,          3.0f,          17.0f,
                                19.0f,  0x1p-9f, 0x1p-10f, 1.5f * 0x1p-9f, -0.0f};
  const std::vector<uint8_t> want = {0x7E, 0xF6, 0x38, 0x30, 0x44, 0x58, 0x5A, 0x01, 0x00, 0x02, 0x80};
  std::vector<uint8_t> codes(v.size(), 0xAA);
  EXPECT_EQ(QuantizeRowFp8(v.data(), static_cast<int64_t>(v.size()), codes.data()), 1.0f);
  EXPECT_EQ(codes, want);
  // The same row times 1/4: scale exactly 1/4, the same codes.
  std::vector<float> quarter = v;
  for (float& f : quarter) f *= 0.25f;
  std::fill(codes.begin(), codes.end(), 0xAA);
  EXPECT_EQ(QuantizeRowFp8(quarter.data(), static_cast<int64_t>(v.size()), codes.data()), 0.25f);
  EXPECT_EQ(codes, want);
}

TEST(QuantizeRowFp8Test, ZeroRowsAndUnderflowingScalesGiveScaleZero) {
  std::vector<float> zeros = {0.0f, -0.0f, 0.0f, -0.0f, 0.0f};
  std::vector<uint8_t> codes(5, 0xAA);
  EXPECT_EQ(QuantizeRowFp8(zeros.data(), 5, codes.data()), 0.0f);
  for (uint8_t c : codes) EXPECT_EQ(c, 0);
  // max|w| / 448 underflows to 0: treated as a zero row, not a division by 0.
  std::vector<float> tiny = {0x1p-149f, -0x1p-149f, 0.0f};
  std::fill(codes.begin(), codes.end(), 0xAA);
  EXPECT_EQ(QuantizeRowFp8(tiny.data(), 3, codes.data()), 0.0f);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(codes[i], 0);
}

TEST(QuantizeRowFp8Test, OneHugeValueFlushesTheRestToSignedZero) {
  const std::vector<float> v = {1.0f, 1e30f, -1.0f, 1e-10f};
  std::vector<uint8_t> codes(4);
  const float scale = QuantizeRowFp8(v.data(), 4, codes.data());
  EXPECT_EQ(scale, 1e30f / 448.0f);
  // 1 / scale is ~4.5e-28, far below half the smallest subnormal (2^-10).
  EXPECT_EQ(codes, (std::vector<uint8_t>{0x00, 0x7E, 0x80, 0x00}));
}

TEST(QuantizeRowFp8Test, MatchesFloat64RuleExactly) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 7, 31, 64, 100, 577}) {
    for (float sigma : {1.0f, 1e-3f, 300.0f, 1e-30f}) {
      const std::vector<float> v = RandomVector(n, rng, sigma);
      std::vector<uint8_t> codes(n, 0xAA);
      const float scale = QuantizeRowFp8(v.data(), n, codes.data());
      const RefRow want = ReferenceQuantize(v.data(), n);
      ASSERT_EQ(scale, want.scale) << "n=" << n;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(codes[i], want.codes[i]) << "n=" << n << " i=" << i << " v=" << v[i];
      // The largest magnitude maps to +-448.
      const int64_t top =
          std::max_element(v.begin(), v.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); }) - v.begin();
      EXPECT_EQ(codes[top], v[top] > 0 ? 0x7E : 0xFE);
    }
  }
}

TEST(QuantizeWeightFp8Test, EveryDtypeAndStrideMatchesTheRule) {
  std::mt19937 rng(2);
  const int64_t rows = 13, cols = 70, stride = 75;
  std::vector<float> values = RandomVector(rows * stride, rng, 0.05f);
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
    const Fp8Weight w = QuantizeWeightFp8({dtype, bytes.data(), rows, cols, stride});
    ASSERT_EQ(w.padded_cols, 128);
    for (int64_t r = 0; r < rows; ++r) {
      const RefRow want = ReferenceQuantize(exact.data() + r * cols, cols);
      ASSERT_EQ(w.scales[r], want.scale);
      for (int64_t c = 0; c < w.padded_cols; ++c) {
        ASSERT_EQ(w.codes[r * w.padded_cols + c], c < cols ? want.codes[c] : 0) << "row " << r << " col " << c;
      }
    }
  }
}

// The widening every kernel does, over all 256 codes: E4M3 * 2^-8 exactly
// (bits compared, so the sign of zero counts), normal and subnormal codes
// alike; NaN codes come out as +-1.875 (documented; never stored).
TEST(Fp8WideningTest, AllCodesAreTheE4M3ValueTimesTwoToMinusEight) {
  std::vector<uint8_t> codes(256);
  for (int c = 0; c < 256; ++c) codes[c] = static_cast<uint8_t>(c);
  for (Fp8Path path : Paths()) {
    std::vector<float> got(256);
    WidenFp8CodesOn(path, codes.data(), 256, got.data());
    for (int c = 0; c < 256; ++c) {
      const auto code = static_cast<uint8_t>(c);
      if (IsNanCode(code)) {
        EXPECT_EQ(got[c], (c & 0x80) ? -1.875f : 1.875f) << PathName(path) << " code " << c;
        continue;
      }
      const float want = static_cast<float>(DecodeE4M3(code) / 256.0);
      EXPECT_EQ(std::memcmp(&got[c], &want, 4), 0) << PathName(path) << " code " << c << ": " << got[c];
      const float codec = E4M3ToFloat(code);
      EXPECT_EQ(got[c] * 256.0f, codec) << PathName(path) << " code " << c;
      EXPECT_EQ(std::signbit(got[c]), std::signbit(codec)) << PathName(path) << " code " << c;
      // Never an fp32 subnormal: products keep full precision.
      EXPECT_TRUE(got[c] == 0.0f || std::fabs(got[c]) >= 0x1p-17f) << c;
    }
  }
}

class MatMulFp8Test : public ::testing::Test {
 protected:
  void TearDown() override {
    SetCpuIsa(DetectedCpuIsa());
    omp_set_num_threads(omp_get_num_procs());
  }
};

TEST_F(MatMulFp8Test, EveryPathMatchesTheDocumentedOrderBitForBit) {
  std::mt19937 rng(3);
  for (const Shape& s : kShapes) {
    for (bool with_bias : {false, true}) {
      const std::vector<float> x = RandomVector(s.m * s.k, rng);
      const std::vector<float> wv = RandomVector(s.n * s.k, rng, 0.05f);
      const std::vector<float> bias = RandomVector(s.n, rng);
      const float* b = with_bias ? bias.data() : nullptr;
      const Fp8Weight w = QuantizeWeightFp8(F32Ref(wv, s.n, s.k, s.k));
      const std::vector<float> want = ReferenceMatMul(x, s.m, w, b);
      for (Fp8Path path : Paths()) {
        std::vector<float> got(s.m * s.n);
        MatMulFp8On(path, x.data(), s.m, w, b, got.data());
        for (int64_t i = 0; i < s.m * s.n; ++i) {
          ASSERT_EQ(got[i], want[i]) << PathName(path) << " m=" << s.m << " n=" << s.n << " k=" << s.k << " i=" << i;
        }
      }
    }
  }
}

// The header's claim: the same bits as fp32 MatMul over the matrix of
// E4M3ToFloat(code), then scale * S (+ bias), at every ISA level, for
// activations of any magnitude from 1e-20 (where widening to E4M3 * 2^-120
// would put products among fp32 subnormals) to 1e15.
TEST_F(MatMulFp8Test, EqualsFp32MatMulOverTheCodesThenTheScale) {
  std::mt19937 rng(4);
  for (const Shape& s : kShapes) {
    const std::vector<float> wv = RandomVector(s.n * s.k, rng, 0.05f);
    const Fp8Weight w = QuantizeWeightFp8(F32Ref(wv, s.n, s.k, s.k));
    std::vector<float> e(s.n * s.k);
    for (int64_t r = 0; r < s.n; ++r) {
      for (int64_t c = 0; c < s.k; ++c) e[r * s.k + c] = E4M3ToFloat(w.codes[r * w.padded_cols + c]);
    }
    for (float sigma : {1.0f, 1e-20f, 1e15f}) {
      const std::vector<float> x = RandomVector(s.m * s.k, rng, sigma);
      const std::vector<float> bias = RandomVector(s.n, rng, sigma * 1e-3f);
      std::vector<float> sums(s.m * s.n);
      MatMul(x.data(), s.m, F32Ref(e, s.n, s.k, s.k), nullptr, sums.data());
      std::vector<float> got(s.m * s.n);
      MatMulFp8(x.data(), s.m, w, bias.data(), got.data());
      for (int64_t i = 0; i < s.m; ++i) {
        for (int64_t r = 0; r < s.n; ++r) {
          const float scaled = sums[i * s.n + r] * w.scales[r];
          ASSERT_EQ(got[i * s.n + r], scaled + bias[r])
              << "m=" << s.m << " n=" << s.n << " k=" << s.k << " sigma=" << sigma;
        }
      }
    }
  }
}

// Against float64 over the same dequantized values (x * E4M3 * scale is
// exact in float64: 24 + 4 + 24 significant bits). The fp32 result has a
// chain of L = ceil(k/16) fma roundings per lane, 4 tree additions and one
// scale product, each a relative error <= u = 2^-24 of the running value,
// so |error| <= (L + 5) u sum|x e s| (first order), plus u |y| for the bias
// add. Stated tolerance: 1.01 times that.
TEST_F(MatMulFp8Test, WithinTheFp32BoundOfFloat64) {
  std::mt19937 rng(5);
  for (const Shape& s : kShapes) {
    const std::vector<float> x = RandomVector(s.m * s.k, rng);
    const std::vector<float> wv = RandomVector(s.n * s.k, rng, 0.05f);
    const std::vector<float> bias = RandomVector(s.n, rng);
    const Fp8Weight w = QuantizeWeightFp8(F32Ref(wv, s.n, s.k, s.k));
    std::vector<float> got(s.m * s.n);
    MatMulFp8(x.data(), s.m, w, bias.data(), got.data());
    const double u = std::ldexp(1.0, -24);
    const double chain = static_cast<double>((s.k + 15) / 16 + 5);
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t r = 0; r < s.n; ++r) {
        double exact = 0.0, magnitude = 0.0;
        for (int64_t c = 0; c < s.k; ++c) {
          const double p = double{x[i * s.k + c]} * DecodeE4M3(w.codes[r * w.padded_cols + c]) * double{w.scales[r]};
          exact += p;
          magnitude += std::fabs(p);
        }
        exact += bias[r];
        const double bound = 1.01 * (chain * u * magnitude + u * std::fabs(exact)) + 1e-30;
        EXPECT_NEAR(got[i * s.n + r], exact, bound) << "m=" << s.m << " n=" << s.n << " k=" << s.k << " r=" << r;
      }
    }
  }
}

TEST_F(MatMulFp8Test, ActivePathFollowsTheIsaCap) {
  SetCpuIsa(CpuIsa::kAvx2);
  EXPECT_EQ(ActiveFp8Path(), Fp8Path::kAvx2);
  SetCpuIsa(DetectedCpuIsa());
  EXPECT_EQ(ActiveFp8Path(), DetectedCpuIsa() >= CpuIsa::kAvx512 ? Fp8Path::kAvx512 : Fp8Path::kAvx2);
}

TEST_F(MatMulFp8Test, RowAloneEqualsRowInAnyBatchOnOneAndTwoThreads) {
  std::mt19937 rng(6);
  const int64_t n = 53, k = 130;
  const int64_t batch_sizes[] = {1, 2, 3, 5, 8, 16, 33, 64};
  const int64_t max_m = 64;
  const std::vector<float> x = RandomVector(max_m * k, rng);
  const std::vector<float> wv = RandomVector(n * k, rng, 0.05f);
  const std::vector<float> bias = RandomVector(n, rng);
  const Fp8Weight w = QuantizeWeightFp8(F32Ref(wv, n, k, k));
  for (Fp8Path path : Paths()) {
    std::vector<float> alone(max_m * n);
    omp_set_num_threads(1);
    for (int64_t i = 0; i < max_m; ++i) MatMulFp8On(path, x.data() + i * k, 1, w, bias.data(), alone.data() + i * n);
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      for (int64_t m : batch_sizes) {
        std::vector<float> batched(m * n);
        MatMulFp8On(path, x.data(), m, w, bias.data(), batched.data());
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t r = 0; r < n; ++r) {
            ASSERT_EQ(alone[i * n + r], batched[i * n + r])
                << PathName(path) << " threads=" << threads << " row " << i << " of " << m;
          }
        }
      }
    }
  }
}

TEST(MakeFp8WeightTest, RoundTripsCodesAndScalesFromAWiderStride) {
  std::mt19937 rng(7);
  const int64_t rows = 5, cols = 70, stride = 80;
  const std::vector<float> wv = RandomVector(rows * cols, rng, 0.05f);
  const Fp8Weight q = QuantizeWeightFp8(F32Ref(wv, rows, cols, cols));
  std::vector<uint8_t> file(rows * stride, 0x7F);  // NaN codes past cols: another shard's, never read
  for (int64_t r = 0; r < rows; ++r) std::memcpy(&file[r * stride], &q.codes[r * q.padded_cols], cols);
  ASSERT_OK_AND_ASSIGN(const Fp8Weight w, MakeFp8Weight(rows, cols, file.data(), stride, q.scales.data()));
  EXPECT_EQ(w.rows, rows);
  EXPECT_EQ(w.cols, cols);
  EXPECT_EQ(w.padded_cols, 128);
  EXPECT_EQ(w.codes, q.codes);
  EXPECT_EQ(w.scales, q.scales);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeFp8Row(w, r, row.data());
    for (int64_t c = 0; c < cols; ++c) {
      const float want = static_cast<float>(DecodeE4M3(file[r * stride + c]) * double{q.scales[r]});
      ASSERT_EQ(row[c], want) << r << "," << c;
      // And close to the weight it came from: within half a code step.
      EXPECT_NEAR(row[c], wv[r * cols + c], std::fabs(wv[r * cols + c]) / 16 + q.scales[r] * 0x1p-10f);
    }
  }
}

TEST(MakeFp8WeightTest, RejectsNanCodesBadScalesAndSizes) {
  std::vector<uint8_t> codes(2 * 4, 0x38);
  std::vector<float> scales = {1.0f, 0.5f};
  EXPECT_TRUE(MakeFp8Weight(2, 4, codes.data(), 4, scales.data()).ok());
  for (uint8_t nan : {uint8_t{0x7F}, uint8_t{0xFF}}) {
    codes[6] = nan;
    const auto bad = MakeFp8Weight(2, 4, codes.data(), 4, scales.data());
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("row 1 column 2"), std::string::npos) << bad.status();
    EXPECT_NE(bad.status().message().find("NaN"), std::string::npos) << bad.status();
  }
  codes[6] = 0x38;
  for (float s : {INFINITY, NAN, 0x1p120f}) {
    scales[1] = s;
    const auto bad = MakeFp8Weight(2, 4, codes.data(), 4, scales.data());
    ASSERT_FALSE(bad.ok()) << s;
    EXPECT_NE(bad.status().message().find("scale"), std::string::npos) << bad.status();
  }
  scales[1] = 0.5f;
  EXPECT_FALSE(MakeFp8Weight(2, 4, codes.data(), 3, scales.data()).ok());  // stride < cols
  EXPECT_FALSE(MakeFp8Weight(2, 4, nullptr, 4, scales.data()).ok());
  EXPECT_FALSE(MakeFp8Weight(-1, 4, codes.data(), 4, scales.data()).ok());
}

}  // namespace
}  // namespace tandem::kernels
