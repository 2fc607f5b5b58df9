// Tests for kernels::MatMulBf16 (the --dtype bfloat16 MatMul): close to a
// float64 dot product of the BF16-rounded inputs; batch-invariant bit for bit
// (a row alone == the same row inside batches of every size, on one thread
// and two); the AMX kernel and the fallback (rounded x through the fp32
// kernels) agree to fp32 rounding. Shapes exercise every edge: k not a
// multiple of 32, weight rows not a multiple of 32, batch rows not a multiple
// of 16 (and both one and two 16-row groups), a row stride wider than the
// columns whose padding would show if read.
//
// The AVX512_BF16 kernel (vdpbf16ps, called directly: MatMulBf16 picks it
// only where it is the faster path) against the fallback and a scalar
// std::fma model of the shared order, bit for bit (memcmp), on normal-range
// data (vdpbf16ps flushes subnormals, see cpu/matmul_kernels.h).
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/kernels/cpu/matmul_kernels.h"
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
                         ::testing::Values(CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16, CpuIsa::kAmx),
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

// The shared order (cpu/matmul_kernels.h) on the rounded x, in scalar code:
// lane l: fma over k = l, l+16, ... (the last group zero-padded with 0 * 0),
// then the lane tree and the bias.
std::vector<float> ContractOrder(const std::vector<float>& x, int64_t m, const Bf16Weight& w, const float* bias) {
  std::vector<float> y(m * w.rows);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      float acc[16];
      for (int l = 0; l < 16; ++l) {
        float a = 0.0f;
        for (int64_t c = l; c < (w.cols + 15) / 16 * 16; c += 16) {
          const float xv = c < w.cols ? Bf16ToFloat(FloatToBf16(x[i * w.cols + c])) : 0.0f;
          const float wv = c < w.cols ? Bf16ToFloat(w.bits[r * w.stride + c]) : 0.0f;
          a = std::fma(xv, wv, a);
        }
        acc[l] = a;
      }
      for (int half = 8; half >= 1; half /= 2) {
        for (int l = 0; l < half; ++l) acc[l] = acc[l] + acc[l + half];
      }
      y[i * w.rows + r] = acc[0] + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
  return y;
}

class MatMulBf16DotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DetectedCpuIsa() < CpuIsa::kAvx512Bf16) GTEST_SKIP() << "this CPU has no avx512_bf16 (vdpbf16ps)";
  }
  void TearDown() override {
    SetCpuIsa(CpuIsa::kAmx);
    omp_set_num_threads(2);
  }
  // The vdpbf16ps kernel itself.
  static std::vector<float> Dot(const std::vector<float>& x, int64_t m, const Bf16Weight& w, const float* bias) {
    std::vector<float> y(m * w.rows, -7.0f);
    const cpu::MatMulArgs args{x.data(), m,    static_cast<int>(DType::kBF16), w.bits.data(), w.rows, w.cols,
                               w.stride, bias, y.data()};
    cpu::MatMulAvx512Bf16(args);
    return y;
  }
  // MatMulBf16 at `isa` (AMX is never chosen here: the level is capped).
  static std::vector<float> At(CpuIsa isa, const std::vector<float>& x, int64_t m, const Bf16Weight& w,
                               const float* bias) {
    SetCpuIsa(isa);
    std::vector<float> y(m * w.rows, -7.0f);
    MatMulBf16(x.data(), m, w.Ref(), bias, y.data());
    return y;
  }
};

TEST_F(MatMulBf16DotTest, BitIdenticalToTheFallbackAndTheScalarOrder) {
  std::mt19937 rng(21);
  int64_t checked = 0;
  for (int64_t k : {1, 15, 16, 17, 31, 32, 33, 64, 100, 576, 1536}) {
    for (int64_t n : {1, 5, 6, 7, 13, 50}) {
      const int64_t pad = (k + n) % 3 == 0 ? 0 : (k + n) % 3 == 1 ? 3 : 24;
      const Bf16Weight w = MakeWeight(n, k, pad, rng);
      const std::vector<float> bias = RandomRows(1, n, rng);
      for (int64_t m : {1, 2, 3, 4, 5, 16, 17, 64, 130}) {
        if (k * n * m > 2000000) continue;
        const std::vector<float> x = RandomRows(m, k, rng);
        for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
          const std::vector<float> dot = Dot(x, m, w, b);
          const std::vector<float> level = At(CpuIsa::kAvx512Bf16, x, m, w, b);
          const std::vector<float> fallback = At(CpuIsa::kAvx512, x, m, w, b);
          const std::vector<float> scalar = ContractOrder(x, m, w, b);
          ASSERT_EQ(0, std::memcmp(level.data(), fallback.data(), dot.size() * sizeof(float)))
              << "MatMulBf16 at avx512_bf16 vs avx512: m=" << m << " n=" << n << " k=" << k;
          ASSERT_EQ(0, std::memcmp(dot.data(), fallback.data(), dot.size() * sizeof(float)))
              << "vs fallback: m=" << m << " n=" << n << " k=" << k << " pad=" << pad << " bias=" << (b != nullptr);
          ASSERT_EQ(0, std::memcmp(dot.data(), scalar.data(), dot.size() * sizeof(float)))
              << "vs scalar: m=" << m << " n=" << n << " k=" << k << " pad=" << pad << " bias=" << (b != nullptr);
          ++checked;
        }
      }
    }
  }
  RecordProperty("cases", static_cast<int>(checked));
}

// Larger sums where the order matters more (values of mixed magnitude, so a
// changed order shows), at the real model widths, on one thread and two.
TEST_F(MatMulBf16DotTest, BitIdenticalAtModelWidthsOnOneOrTwoThreads) {
  std::mt19937 rng(22);
  for (auto [n, k] : {std::tuple<int64_t, int64_t>{1536, 576}, {576, 1536}, {67, 2048}}) {
    Bf16Weight w = MakeWeight(n, k, 0, rng);
    std::vector<float> x = RandomRows(17, k, rng);
    for (size_t i = 0; i < x.size(); ++i) x[i] *= static_cast<float>(1 << (i % 7)) / 8.0f;
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      for (int64_t m : {1, 4, 17}) {
        const std::vector<float> dot = Dot(x, m, w, nullptr);
        const std::vector<float> fallback = At(CpuIsa::kAvx512, x, m, w, nullptr);
        ASSERT_EQ(0, std::memcmp(dot.data(), fallback.data(), dot.size() * sizeof(float)))
            << "n=" << n << " k=" << k << " m=" << m << " threads " << threads;
      }
    }
  }
}

// A row alone gives the bits it gets at any position in a batch of 37, on
// one thread and two (the packed-panel and the streaming paths included).
TEST_F(MatMulBf16DotTest, RowAloneEqualsRowInABatchOf37) {
  std::mt19937 rng(23);
  for (auto [n, k] : {std::tuple<int64_t, int64_t>{50, 100}, {13, 33}, {96, 576}, {7, 1536}}) {
    const Bf16Weight w = MakeWeight(n, k, 5, rng);
    const std::vector<float> bias = RandomRows(1, n, rng);
    const int64_t m = 37;
    const std::vector<float> x = RandomRows(m, k, rng);
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      const std::vector<float> all = Dot(x, m, w, bias.data());
      for (int64_t i : {0, 1, 3, 4, 17, 36}) {
        const std::vector<float> row(x.begin() + i * k, x.begin() + (i + 1) * k);
        const std::vector<float> alone = Dot(row, 1, w, bias.data());
        ASSERT_EQ(0, std::memcmp(alone.data(), all.data() + i * n, n * sizeof(float)))
            << "row " << i << " n=" << n << " k=" << k << " threads " << threads;
      }
    }
  }
}

// x rounds exactly as FloatToBf16 does: ties to even both ways, values that
// round up into the next binade and to infinity, NaN kept NaN (quiet), signed
// zeros. One weight of 1.0 picks each rounded input out (a single product per
// lane, so y is the rounded x itself).
TEST_F(MatMulBf16DotTest, RoundsActivationsLikeFloatToBf16) {
  const uint32_t patterns[] = {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x3f7fffffu, 0x7f7fffffu, 0xff7fffffu,
                               0x7fc00001u, 0x7f800001u, 0xff812345u, 0x80000000u, 0x00000000u, 0x3f800001u,
                               0xbf808000u, 0x40490fdbu, 0x7f800000u, 0x4f7fff80u, 0x00800000u};
  const int64_t k = 17;
  for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; ++p) {
    std::vector<float> x(k, 0.0f);
    std::memcpy(&x[p % k], &patterns[p], 4);
    Bf16Weight w{1, k, k, std::vector<uint16_t>(k, 0), {}};
    w.bits[p % k] = 0x3f80;
    const std::vector<float> y = Dot(x, 1, w, nullptr);
    const std::vector<float> fallback = At(CpuIsa::kAvx512, x, 1, w, nullptr);
    const float want = Bf16ToFloat(FloatToBf16(x[p % k]));
    // Zeros come out +0 either way (the lanes start at +0).
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(y[0])) << std::hex << patterns[p];
    } else {
      EXPECT_EQ(y[0], want) << std::hex << patterns[p];
    }
    EXPECT_EQ(0, std::memcmp(y.data(), fallback.data(), 4)) << std::hex << patterns[p] << " got " << y[0]
                                                             << " fallback " << fallback[0];
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
