// Tests for kernels::MatMul at every ISA level this machine has (AVX2 forced
// on an AVX-512 machine included): bit-exact against a scalar transcription
// of the shared reduction order (cpu/matmul_kernels.h), close to a float64
// dot product, batch-invariant (a row alone == the same row in any batch),
// the same bits on one thread and two, and the same bits at every level.
// Shapes are odd on purpose: tails in k (k % 16 != 0), edge tiles in m and n,
// a row stride wider than the columns (a tensor-parallel column slice).
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"
#include "gtest/gtest.h"

namespace tandem::kernels {
namespace {

// A weight matrix in one dtype, with its exact fp32 values for references.
struct TestWeight {
  DType dtype;
  int64_t rows, cols, row_stride;
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // [rows][cols], exactly what the bytes hold

  WeightRef Ref() const { return {dtype, bytes.data(), rows, cols, row_stride}; }
};

TestWeight MakeWeight(DType dtype, int64_t rows, int64_t cols, int64_t pad, std::mt19937& rng) {
  TestWeight w{dtype, rows, cols, cols + pad, {}, {}};
  std::normal_distribution<float> dist(0.0f, 1.0f);
  w.bytes.resize(rows * w.row_stride * DTypeSize(dtype));
  w.values.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < w.row_stride; ++c) {
      // Padding columns hold large values that would show up if read.
      const float v = c < cols ? dist(rng) : 1e6f;
      const int64_t at = r * w.row_stride + c;
      float exact = v;
      switch (dtype) {
        case DType::kF32:
          std::memcpy(&w.bytes[at * 4], &v, 4);
          break;
        case DType::kBF16: {
          const uint16_t h = FloatToBf16(v);
          std::memcpy(&w.bytes[at * 2], &h, 2);
          exact = Bf16ToFloat(h);
          break;
        }
        case DType::kF16: {
          const uint16_t h = FloatToF16(v);
          std::memcpy(&w.bytes[at * 2], &h, 2);
          exact = F16ToFloat(h);
          break;
        }
        default:  // storage types never reach MatMul
          ADD_FAILURE() << "not a float dtype";
      }
      if (c < cols) w.values[r * cols + c] = exact;
    }
  }
  return w;
}

std::vector<float> RandomVector(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// The shared order, one scalar at a time: 16 lanes of fused multiply-adds
// over k (zero-padded last group), then the fixed pairwise tree, then bias.
float ReferenceDot(const float* x, const float* w, int64_t k, float bias) {
  float acc[16] = {};
  const int64_t padded = (k + 15) / 16 * 16;
  for (int64_t i = 0; i < padded; ++i) {
    const float a = i < k ? x[i] : 0.0f;
    const float b = i < k ? w[i] : 0.0f;
    acc[i % 16] = std::fma(a, b, acc[i % 16]);
  }
  for (int width = 8; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0] + bias;
}

std::vector<float> ReferenceMatMul(const std::vector<float>& x, int64_t m, const TestWeight& w,
                                   const std::vector<float>& bias) {
  std::vector<float> y(m * w.rows);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      y[i * w.rows + r] = ReferenceDot(&x[i * w.cols], &w.values[r * w.cols], w.cols,
                                       bias.empty() ? 0.0f : bias[r]);
    }
  }
  return y;
}

std::vector<float> RunMatMul(const std::vector<float>& x, int64_t m, const TestWeight& w, const std::vector<float>& bias) {
  std::vector<float> y(m * w.rows, -7.0f);
  MatMul(x.data(), m, w.Ref(), bias.empty() ? nullptr : bias.data(), y.data());
  return y;
}

// Every level from AVX2 up to what this CPU has.
std::vector<CpuIsa> Levels() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16, CpuIsa::kAmx}) {
    if (isa <= DetectedCpuIsa()) out.push_back(isa);
  }
  return out;
}

struct Shape {
  int64_t m, n, k, pad;
};

const Shape kShapes[] = {
    {1, 1, 1, 0},   {1, 7, 5, 0},   {2, 5, 16, 0},   {3, 13, 17, 3},  {4, 6, 33, 0},   {5, 7, 100, 1},
    {7, 19, 64, 0}, {9, 70, 300, 5}, {16, 12, 48, 0}, {33, 25, 129, 2}, {1, 257, 576, 0}, {17, 11, 1, 0},
    {16, 61, 576, 0},  // decode-sized: widened panels grouped two by two (576-wide k), the last group short
    {67, 10, 2050, 3},  // prefill-sized: the AVX2 kernel takes x in blocks of rows (32, 32, 3 here)
};

class MatMulTest : public ::testing::TestWithParam<DType> {
 protected:
  void TearDown() override { SetCpuIsa(DetectedCpuIsa()); }
};

TEST_P(MatMulTest, MatchesScalarOrderBitForBitAtEveryLevel) {
  std::mt19937 rng(1);
  for (const Shape& s : kShapes) {
    const TestWeight w = MakeWeight(GetParam(), s.n, s.k, s.pad, rng);
    const std::vector<float> x = RandomVector(s.m * s.k, rng);
    for (bool with_bias : {false, true}) {
      const std::vector<float> bias = with_bias ? RandomVector(s.n, rng) : std::vector<float>();
      const std::vector<float> want = ReferenceMatMul(x, s.m, w, bias);
      for (CpuIsa isa : Levels()) {
        SetCpuIsa(isa);
        const std::vector<float> got = RunMatMul(x, s.m, w, bias);
        for (int64_t i = 0; i < s.m * s.n; ++i) {
          ASSERT_EQ(got[i], want[i]) << CpuIsaName(isa) << " m=" << s.m << " n=" << s.n << " k=" << s.k
                                     << " bias=" << with_bias << " at " << i;
        }
      }
    }
  }
}

TEST_P(MatMulTest, CloseToFloat64) {
  std::mt19937 rng(2);
  const TestWeight w = MakeWeight(GetParam(), 37, 211, 0, rng);
  const std::vector<float> x = RandomVector(5 * 211, rng);
  for (CpuIsa isa : Levels()) {
    SetCpuIsa(isa);
    const std::vector<float> got = RunMatMul(x, 5, w, {});
    for (int64_t i = 0; i < 5; ++i) {
      for (int64_t r = 0; r < 37; ++r) {
        double want = 0.0, scale = 0.0;
        for (int64_t c = 0; c < 211; ++c) {
          want += static_cast<double>(x[i * 211 + c]) * w.values[r * 211 + c];
          scale += std::fabs(static_cast<double>(x[i * 211 + c]) * w.values[r * 211 + c]);
        }
        EXPECT_NEAR(got[i * 37 + r], want, 1e-5 * scale + 1e-6) << CpuIsaName(isa);
      }
    }
  }
}

TEST_P(MatMulTest, RowAloneEqualsRowInAnyBatch) {
  std::mt19937 rng(3);
  const int64_t m = 23, n = 29, k = 77;
  const TestWeight w = MakeWeight(GetParam(), n, k, 0, rng);
  const std::vector<float> x = RandomVector(m * k, rng);
  for (CpuIsa isa : Levels()) {
    SetCpuIsa(isa);
    const std::vector<float> batched = RunMatMul(x, m, w, {});
    for (int64_t i = 0; i < m; ++i) {
      const std::vector<float> row(x.begin() + i * k, x.begin() + (i + 1) * k);
      const std::vector<float> alone = RunMatMul(row, 1, w, {});
      for (int64_t r = 0; r < n; ++r) ASSERT_EQ(alone[r], batched[i * n + r]) << CpuIsaName(isa) << " row " << i;
    }
  }
}

TEST_P(MatMulTest, SameBitsOnOneAndTwoThreads) {
  std::mt19937 rng(4);
  const int64_t m = 20, n = 150, k = 250;  // above the parallel threshold
  const TestWeight w = MakeWeight(GetParam(), n, k, 0, rng);
  const std::vector<float> x = RandomVector(m * k, rng);
  const int before = omp_get_max_threads();
  for (CpuIsa isa : Levels()) {
    SetCpuIsa(isa);
    omp_set_num_threads(1);
    const std::vector<float> one = RunMatMul(x, m, w, {});
    omp_set_num_threads(2);
    const std::vector<float> two = RunMatMul(x, m, w, {});
    EXPECT_EQ(one, two) << CpuIsaName(isa);
  }
  omp_set_num_threads(before);
}

INSTANTIATE_TEST_SUITE_P(AllWeightDtypes, MatMulTest, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

}  // namespace
}  // namespace tandem::kernels
