// Tests for kernels::MatMulBf16 (the --dtype bfloat16 MatMul): close to a
// float64 dot product of the BF16-rounded inputs; batch-invariant bit for bit
// (a row alone == the same row inside batches of every size, on one thread
// and two); the AMX kernel and the fallback (rounded x through the fp32
// kernels) agree to fp32 rounding. Shapes exercise every edge: k not a
// multiple of 32, weight rows not a multiple of 32, batch rows not a multiple
// of 16 (and both one and two 16-row groups), a row stride wider than the
// columns whose padding would show if read.
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace tandem::kernels {
namespace {

struct Shape {
  int64_t m, n, k, pad;
};

struct Bf16Weight {
  int64_t rows, cols, stride;
  std::vector<uint16_t> bits;
  std::vector<double> values;  // [rows][cols]
  WeightRef Ref() const { return {DType::kBF16, bits.data(), rows, cols, stride}; }
};

Bf16Weight MakeWeight(int64_t rows, int64_t cols, int64_t pad, std::mt19937& rng) {
  Bf16Weight w{rows, cols, cols + pad, {}, {}};
  std::normal_distribution<float> dist(0.0f, 1.0f);
  w.bits.resize(rows * w.stride);
  w.values.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < w.stride; ++c) {
      // Padding holds +inf: read by mistake, it would turn a result inf or NaN.
      const uint16_t h = c < cols ? FloatToBf16(dist(rng)) : 0x7f80;
      w.bits[r * w.stride + c] = h;
      if (c < cols) w.values[r * cols + c] = Bf16ToFloat(h);
    }
  }
  return w;
}

std::vector<float> RandomRows(int64_t m, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(m * k);
  for (float& v : x) v = dist(rng);
  return x;
}

// y = round_bf16(x) . W^T + bias in float64, and the scale of each sum
// (sum of |products|) that bounds fp32 summation error.
void Reference(const std::vector<float>& x, int64_t m, const Bf16Weight& w, const std::vector<float>& bias,
               std::vector<double>* y, std::vector<double>* scale) {
  y->assign(m * w.rows, 0.0);
  scale->assign(m * w.rows, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = 0.0, a = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) {
        const double p = static_cast<double>(Bf16ToFloat(FloatToBf16(x[i * w.cols + c]))) * w.values[r * w.cols + c];
        s += p;
        a += std::fabs(p);
      }
      (*y)[i * w.rows + r] = s + (bias.empty() ? 0.0 : bias[r]);
      (*scale)[i * w.rows + r] = a + 1.0;
    }
  }
}

std::vector<float> RunBf16(const std::vector<float>& x, int64_t m, const Bf16Weight& w, const std::vector<float>& bias) {
  std::vector<float> y(m * w.rows, -7.0f);
  MatMulBf16(x.data(), m, w.Ref(), bias.empty() ? nullptr : bias.data(), y.data());
  return y;
}

const Shape kShapes[] = {
    {1, 576, 576, 0},   // decode, SmolLM2 q_proj
    {3, 37, 50, 5},     // k tail, a partial weight block, one group
    {17, 33, 64, 0},    // two groups (the second one row), weight edge block of 1 row
    {40, 100, 96, 3},   // a pair of groups and a single one
    {33, 65, 1000, 8},  // k tail over many steps
    {64, 96, 1536, 0},  // down_proj-like k, two pairs of groups
};

class MatMulBf16Test : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (GetParam() > DetectedCpuIsa()) GTEST_SKIP() << "this CPU has no " << CpuIsaName(GetParam());
    SetCpuIsa(GetParam());
  }
  void TearDown() override { SetCpuIsa(CpuIsa::kAmx); }
};

TEST_P(MatMulBf16Test, MatchesFloat64OfRoundedInputs) {
  std::mt19937 rng(11);
  for (const Shape& s : kShapes) {
    const Bf16Weight w = MakeWeight(s.n, s.k, s.pad, rng);
    const std::vector<float> x = RandomRows(s.m, s.k, rng);
    std::vector<float> bias = s.n % 2 == 1 ? RandomRows(1, s.n, rng) : std::vector<float>();
    std::vector<double> want, scale;
    Reference(x, s.m, w, bias, &want, &scale);
    const std::vector<float> got = RunBf16(x, s.m, w, bias);
    for (int64_t i = 0; i < s.m * s.n; ++i) {
      // fp32 sums over k terms: error below k * 2^-24 * sum |products|.
      ASSERT_NEAR(got[i], want[i], static_cast<double>(s.k) * 0x1p-24 * scale[i])
          << "m=" << s.m << " n=" << s.n << " k=" << s.k << " at " << i;
    }
  }
}

TEST_P(MatMulBf16Test, RowAloneEqualsRowInAnyBatchOnOneOrTwoThreads) {
  std::mt19937 rng(12);
  for (const Shape& s : kShapes) {
    const Bf16Weight w = MakeWeight(s.n, s.k, s.pad, rng);
    const int64_t m = 40;
    const std::vector<float> x = RandomRows(m, s.k, rng);
    const std::vector<float> bias;
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      const std::vector<float> all = RunBf16(x, m, w, bias);
      for (int64_t batch : {int64_t{1}, int64_t{5}, int64_t{16}, int64_t{17}, int64_t{33}}) {
        for (int64_t i0 = 0; i0 + batch <= m; i0 += 13) {
          const std::vector<float> part(x.begin() + i0 * s.k, x.begin() + (i0 + batch) * s.k);
          const std::vector<float> y = RunBf16(part, batch, w, bias);
          ASSERT_EQ(0, std::memcmp(y.data(), all.data() + i0 * s.n, y.size() * sizeof(float)))
              << "rows " << i0 << "+" << batch << " of k=" << s.k << " n=" << s.n << " threads " << threads;
        }
      }
    }
    omp_set_num_threads(2);
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, MatMulBf16Test,
                         ::testing::Values(CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAmx),
                         [](const auto& info) { return std::string(CpuIsaName(info.param)); });

// The AMX kernel against the fallback: the same products, summed in another
// order, so equal to fp32 rounding (and never bit-compared).
TEST(MatMulBf16Amx, AgreesWithTheFallbackToRounding) {
  if (DetectedCpuIsa() < CpuIsa::kAmx) GTEST_SKIP() << "no AMX on this CPU";
  std::mt19937 rng(13);
  for (const Shape& s : kShapes) {
    const Bf16Weight w = MakeWeight(s.n, s.k, s.pad, rng);
    const std::vector<float> x = RandomRows(s.m, s.k, rng);
    SetCpuIsa(CpuIsa::kAmx);
    const std::vector<float> amx = RunBf16(x, s.m, w, {});
    SetCpuIsa(CpuIsa::kAvx512);
    const std::vector<float> fallback = RunBf16(x, s.m, w, {});
    SetCpuIsa(CpuIsa::kAmx);
    std::vector<double> want, scale;
    Reference(x, s.m, w, {}, &want, &scale);
    int64_t differ = 0;
    for (int64_t i = 0; i < s.m * s.n; ++i) {
      ASSERT_NEAR(amx[i], fallback[i], 2.0 * s.k * 0x1p-24 * scale[i]) << "k=" << s.k << " at " << i;
      differ += amx[i] != fallback[i];
    }
    RecordProperty("differing_k" + std::to_string(s.k), static_cast<int>(differ));
  }
}

// The packed layout (PackBf16ForAmx) holds every weight once, zero past the
// matrix, and the AMX kernel gives the same bits from it as in place, for
// edge row counts, k not a multiple of 32, padded row strides (the padding
// holds +inf, so a packed stride mistake shows), batches of 1..40 rows and a
// bias.
TEST(MatMulBf16Amx, PackedWeightsGiveTheInPlaceBits) {
  std::mt19937 rng(15);
  for (auto [n, k, pad] : {std::tuple{32, 64, 0}, {1, 32, 0}, {70, 576, 3}, {33, 45, 1}, {96, 1000, 24},
                           {17, 31, 0}}) {
    const Bf16Weight w = MakeWeight(n, k, pad, rng);
    std::vector<uint16_t> packed(static_cast<size_t>(AmxPackedElems(n, k)), 0xffff);
    ASSERT_EQ(static_cast<int64_t>(packed.size()), (n + 31) / 32 * 32 * ((k + 31) / 32 * 32));
    PackBf16ForAmx(w.Ref(), packed.data());
    const int64_t steps = (k + 31) / 32;
    for (int64_t r = 0; r < (n + 31) / 32 * 32; ++r) {
      for (int64_t c = 0; c < steps * 32; ++c) {
        const uint16_t got = packed[((r / 32 * steps + c / 32) * 32 + r % 32) * 32 + c % 32];
        const uint16_t want = r < n && c < k ? w.bits[r * w.stride + c] : 0;
        ASSERT_EQ(got, want) << "n=" << n << " k=" << k << " row " << r << " col " << c;
      }
    }
    if (DetectedCpuIsa() < CpuIsa::kAmx) continue;
    std::vector<float> bias(n);
    for (float& b : bias) b = std::normal_distribution<float>(0.0f, 1.0f)(rng);
    WeightRef ref = w.Ref();
    WeightRef packed_ref = ref;
    packed_ref.amx_tiles = packed.data();
    for (int64_t m : {1, 5, 16, 17, 40}) {
      const std::vector<float> x = RandomRows(m, k, rng);
      std::vector<float> in_place(m * n, -7.0f), from_packed(m * n, -9.0f);
      MatMulBf16(x.data(), m, ref, bias.data(), in_place.data());
      MatMulBf16(x.data(), m, packed_ref, bias.data(), from_packed.data());
      ASSERT_EQ(0, std::memcmp(in_place.data(), from_packed.data(), in_place.size() * sizeof(float)))
          << "n=" << n << " k=" << k << " m=" << m;
    }
  }
}

// F32 weights in BF16 precision take the fallback: x rounded, weights as stored.
TEST(MatMulBf16Fallback, F32WeightsUseRoundedActivations) {
  std::mt19937 rng(14);
  const int64_t m = 3, n = 20, k = 70;
  std::vector<float> w = RandomRows(n, k, rng), x = RandomRows(m, k, rng);
  std::vector<float> rounded(x.size()), got(m * n), want(m * n);
  for (size_t i = 0; i < x.size(); ++i) rounded[i] = Bf16ToFloat(FloatToBf16(x[i]));
  const WeightRef ref{DType::kF32, w.data(), n, k, k};
  MatMulBf16(x.data(), m, ref, nullptr, got.data());
  MatMul(rounded.data(), m, ref, nullptr, want.data());
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)));
}

}  // namespace
}  // namespace tandem::kernels
