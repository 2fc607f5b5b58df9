// Tests for the W8A8 int8 matmul (int8_matmul.h): the quantization rule for
// weights and activations against a float64 transcription of it (exact int8
// values, scales and row sums); MatMulInt8 against a float64 computation of
// the same quantized values (exact integer sums, then the same fp32 rescale:
// equal bits) and close to the exact product of the dequantized values;
// every path this CPU has (scalar, AVX2, AVX512-VNNI) the same bits; batch
// invariance (a row alone == the same row in batches of 1..N, on one thread
// and two); odd shapes (cols not a multiple of 64, rows not a multiple of
// any tile or panel, a row stride wider than the columns).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "engine/kernels/int8_matmul.h"
#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace tandem::kernels {
namespace {

// The rule in float64: scale = max|v| / 127 and q = rint(v / scale), each
// division rounded to fp32 as the kernel's is (a float64 quotient of two
// floats, rounded to float, is the correctly rounded fp32 quotient).
struct RefRow {
  float scale = 0.0f;
  std::vector<int8_t> q;
};

RefRow ReferenceQuantize(const float* v, int64_t n) {
  double amax = 0.0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(static_cast<double>(v[i])));
  RefRow out;
  out.scale = static_cast<float>(amax / 127.0);
  out.q.assign(n, 0);
  if (out.scale == 0.0f) return out;
  for (int64_t i = 0; i < n; ++i) {
    const double quotient = static_cast<float>(static_cast<double>(v[i]) / static_cast<double>(out.scale));
    out.q[i] = static_cast<int8_t>(std::clamp(std::nearbyint(quotient), -127.0, 127.0));
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

// y by the documented formula from float64-computed quantized values: the
// integer sum exact (int64), then float(acc) * (x_scale * w_scale) + bias in
// fp32, in that order.
std::vector<float> ReferenceMatMul(const std::vector<float>& x, int64_t m, const std::vector<float>& w, int64_t n,
                                   int64_t k, const float* bias) {
  std::vector<RefRow> wq;
  for (int64_t r = 0; r < n; ++r) wq.push_back(ReferenceQuantize(w.data() + r * k, k));
  std::vector<float> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    const RefRow xq = ReferenceQuantize(x.data() + i * k, k);
    for (int64_t r = 0; r < n; ++r) {
      int64_t acc = 0;
      for (int64_t c = 0; c < k; ++c) acc += int64_t{xq.q[c]} * wq[r].q[c];
      const float scale = xq.scale * wq[r].scale;
      float v = static_cast<float>(static_cast<double>(acc)) * scale;
      if (bias != nullptr) v = v + bias[r];
      y[i * n + r] = v;
    }
  }
  return y;
}

std::vector<Int8Path> Paths() {
  std::vector<Int8Path> out = {Int8Path::kScalar, Int8Path::kAvx2};
  if (CpuHasAvx512Vnni()) out.push_back(Int8Path::kAvx512Vnni);
  return out;
}

const char* PathName(Int8Path p) {
  switch (p) {
    case Int8Path::kScalar:
      return "scalar";
    case Int8Path::kAvx2:
      return "avx2";
    case Int8Path::kAvx512Vnni:
      return "avx512_vnni";
  }
  return "?";
}

struct Shape {
  int64_t m, n, k;
};

// k below, at and past 64 with tails; n past the 24-row panel with every
// edge-tile width of the 6- and 4-row tiles (n % 24 = 1..6); m past the
// 4- and 2-row tiles.
const Shape kShapes[] = {{1, 1, 1},     {1, 7, 63},    {3, 25, 64},   {5, 30, 65},   {2, 49, 130},
                         {17, 50, 200}, {9, 24, 576},  {1, 97, 1536}, {2, 27, 100},  {3, 28, 129},
                         {6, 29, 191},  {7, 53, 320}};

TEST(QuantizeRowInt8Test, MatchesFloat64RuleExactly) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 7, 31, 32, 33, 64, 100, 577}) {
    for (float sigma : {1.0f, 1e-3f, 300.0f}) {
      const std::vector<float> v = RandomVector(n, rng, sigma);
      std::vector<int8_t> q(n, 99);
      const float scale = QuantizeRowInt8(v.data(), n, q.data());
      const RefRow want = ReferenceQuantize(v.data(), n);
      ASSERT_EQ(scale, want.scale) << "n=" << n;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(q[i], want.q[i]) << "n=" << n << " i=" << i;
      // The largest magnitude maps to +-127, and every value is within half a step.
      const int64_t top =
          std::max_element(v.begin(), v.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); }) - v.begin();
      EXPECT_EQ(q[top], v[top] > 0 ? 127 : -127);
      for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(q[i] * double{scale}, v[i], 0.5 * scale * (1 + 1e-6));
    }
  }
}

TEST(QuantizeRowInt8Test, ZerosAndTies) {
  std::vector<float> zeros(40, 0.0f);
  std::vector<int8_t> q(40, 5);
  EXPECT_EQ(QuantizeRowInt8(zeros.data(), 40, q.data()), 0.0f);
  for (int8_t v : q) EXPECT_EQ(v, 0);
  // max 127 gives scale 1: halves round to even, in the vector body and the tail.
  std::vector<float> v(40);
  for (int i = 0; i < 40; ++i) v[i] = (i % 2 == 0 ? 0.5f : 1.5f) + static_cast<float>(i % 4) - 2.0f;
  v[0] = 127.0f;
  v[39] = 2.5f;
  const float scale = QuantizeRowInt8(v.data(), 40, q.data());
  ASSERT_EQ(scale, 1.0f);
  for (int i = 1; i < 40; ++i) EXPECT_EQ(q[i], static_cast<int8_t>(std::nearbyint(v[i]))) << i;
  EXPECT_EQ(q[39], 2);
}

TEST(QuantizeWeightInt8Test, EveryDtypeAndStrideMatchesTheRule) {
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
    const Int8Weight w = QuantizeWeightInt8({dtype, bytes.data(), rows, cols, stride});
    ASSERT_EQ(w.padded_cols, 128);
    for (int64_t r = 0; r < rows; ++r) {
      const RefRow want = ReferenceQuantize(exact.data() + r * cols, cols);
      ASSERT_EQ(w.scales[r], want.scale);
      int32_t sum = 0;
      for (int64_t c = 0; c < w.padded_cols; ++c) {
        const int8_t expect = c < cols ? want.q[c] : 0;
        ASSERT_EQ(w.data[r * w.padded_cols + c], expect) << "row " << r << " col " << c;
        sum += expect;
      }
      EXPECT_EQ(w.row_sums[r], sum);
    }
  }
}

class MatMulInt8Test : public ::testing::Test {
 protected:
  void TearDown() override {
    SetCpuIsa(DetectedCpuIsa());
    omp_set_num_threads(omp_get_num_procs());
  }
};

TEST_F(MatMulInt8Test, EveryPathMatchesTheFloat64ComputationBitForBit) {
  std::mt19937 rng(3);
  for (const Shape& s : kShapes) {
    for (bool with_bias : {false, true}) {
      const std::vector<float> x = RandomVector(s.m * s.k, rng);
      const std::vector<float> wv = RandomVector(s.n * s.k, rng, 0.05f);
      const std::vector<float> bias = RandomVector(s.n, rng);
      const float* b = with_bias ? bias.data() : nullptr;
      const Int8Weight w = QuantizeWeightInt8(F32Ref(wv, s.n, s.k, s.k));
      const std::vector<float> want = ReferenceMatMul(x, s.m, wv, s.n, s.k, b);
      for (Int8Path path : Paths()) {
        std::vector<float> got(s.m * s.n);
        MatMulInt8On(path, x.data(), s.m, w, b, got.data());
        for (int64_t i = 0; i < s.m * s.n; ++i) {
          ASSERT_EQ(got[i], want[i]) << PathName(path) << " m=" << s.m << " n=" << s.n << " k=" << s.k << " i=" << i;
        }
      }
    }
  }
}

// The same result against the exact product of the dequantized values: only
// the fp32 rounding of the integer sum and of the two rescale products.
TEST_F(MatMulInt8Test, CloseToExactDequantizedProduct) {
  std::mt19937 rng(4);
  const int64_t m = 6, n = 31, k = 300;
  const std::vector<float> x = RandomVector(m * k, rng);
  const std::vector<float> wv = RandomVector(n * k, rng, 0.05f);
  const Int8Weight w = QuantizeWeightInt8(F32Ref(wv, n, k, k));
  std::vector<float> got(m * n);
  MatMulInt8(x.data(), m, w, nullptr, got.data());
  for (int64_t i = 0; i < m; ++i) {
    const RefRow xq = ReferenceQuantize(x.data() + i * k, k);
    for (int64_t r = 0; r < n; ++r) {
      double exact = 0.0, magnitude = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        const double p = (xq.q[c] * double{xq.scale}) * (w.data[r * w.padded_cols + c] * double{w.scales[r]});
        exact += p;
        magnitude += std::fabs(p);
      }
      EXPECT_NEAR(got[i * n + r], exact, 4e-7 * magnitude + 1e-30) << i << "," << r;
    }
  }
}

TEST_F(MatMulInt8Test, ActivePathFollowsTheIsaCap) {
  SetCpuIsa(CpuIsa::kAvx2);
  EXPECT_EQ(ActiveInt8Path(), Int8Path::kAvx2);
  SetCpuIsa(DetectedCpuIsa());
  EXPECT_EQ(ActiveInt8Path(), CpuHasAvx512Vnni() ? Int8Path::kAvx512Vnni : Int8Path::kAvx2);
}

TEST_F(MatMulInt8Test, RowAloneEqualsRowInAnyBatchOnOneAndTwoThreads) {
  std::mt19937 rng(5);
  const int64_t n = 53, k = 130, max_m = 11;
  const std::vector<float> x = RandomVector(max_m * k, rng);
  const std::vector<float> wv = RandomVector(n * k, rng, 0.05f);
  const std::vector<float> bias = RandomVector(n, rng);
  const Int8Weight w = QuantizeWeightInt8(F32Ref(wv, n, k, k));
  for (Int8Path path : Paths()) {
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      for (int64_t i = 0; i < max_m; ++i) {
        std::vector<float> alone(n);
        MatMulInt8On(path, x.data() + i * k, 1, w, bias.data(), alone.data());
        for (int64_t m = i + 1; m <= max_m; ++m) {
          std::vector<float> batched(m * n);
          MatMulInt8On(path, x.data(), m, w, bias.data(), batched.data());
          for (int64_t r = 0; r < n; ++r) {
            ASSERT_EQ(alone[r], batched[i * n + r])
                << PathName(path) << " threads=" << threads << " row " << i << " of " << m;
          }
        }
      }
    }
  }
}

// Sums near the int32 limit: the VNNI kernel's offset partial sums
// (255 * 127 * k) wrap past 2^31 for k = 70,000, the true sum does not.
TEST_F(MatMulInt8Test, LargeSumsAreExactOnEveryPath) {
  const int64_t k = 70000, n = 3;
  std::vector<float> x(k, 1.0f);
  std::vector<float> wv(n * k, -1.0f);
  for (int64_t c = 0; c < k; ++c) wv[1 * k + c] = 1.0f;
  for (int64_t c = 0; c < k; c += 2) wv[2 * k + c] = 0.5f;  // -127 and a halfway value alternately
  const Int8Weight w = QuantizeWeightInt8(F32Ref(wv, n, k, k));
  const std::vector<float> want = ReferenceMatMul(x, 1, wv, n, k, nullptr);
  for (Int8Path path : Paths()) {
    std::vector<float> got(n);
    MatMulInt8On(path, x.data(), 1, w, nullptr, got.data());
    for (int64_t r = 0; r < n; ++r) EXPECT_EQ(got[r], want[r]) << PathName(path) << " row " << r;
  }
  EXPECT_NEAR(want[0], -1.0 * k, 1e-5 * k);
  EXPECT_NEAR(want[1], 1.0 * k, 1e-5 * k);
}

}  // namespace
}  // namespace tandem::kernels
