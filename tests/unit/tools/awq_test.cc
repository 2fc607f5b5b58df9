// tools/tandem/awq.h: its RTN rule against the engine's (the bits
// `--quantization int4` gives), the factors' normalisation, and the sampler.
#include "tools/tandem/awq.h"

#include <cmath>
#include <random>
#include <vector>

#include "engine/kernels/int4_matmul.h"
#include "gtest/gtest.h"

namespace tandem::cli {
namespace {

// Rows exercising the rule's corners: mixed signs, all positive (lo = 0),
// all negative (hi = 0), an all-zero group (scale 0), halves of a step.
std::vector<float> TestMatrix(int64_t rows, int64_t cols) {
  std::mt19937 gen(7);
  std::normal_distribution<float> n(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = n(gen);
  for (int64_t c = 0; c < cols; ++c) {
    w[1 * cols + c] = std::fabs(w[1 * cols + c]);
    w[2 * cols + c] = -std::fabs(w[2 * cols + c]);
    w[3 * cols + c] = c < 32 ? 0.0f : w[3 * cols + c];
    w[4 * cols + c] = static_cast<float>(c % 31) * 0.5f - 7.0f;  // values on half steps
  }
  return w;
}

TEST(AwqRtn, EqualsTheEngineRuleAtItsGroupSize) {
  for (int64_t cols : {256, 96, 192}) {
    const int64_t rows = 6, g = kernels::Int4GroupSize(cols);
    const std::vector<float> w = TestMatrix(rows, cols);
    kernels::WeightRef ref;
    ref.dtype = DType::kF32;
    ref.data = w.data();
    ref.rows = rows;
    ref.cols = cols;
    ref.row_stride = cols;
    const kernels::Int4Weight engine = kernels::QuantizeWeightInt4(ref);
    ASSERT_EQ(engine.group_size, g);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<uint8_t> q(cols), zeros(cols / g);
      std::vector<float> scales(cols / g);
      QuantizeRowInt4Rtn(w.data() + r * cols, cols, g, q.data(), scales.data(), zeros.data());
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(q[c], engine.Code(r, c)) << cols << " " << r << " " << c;
      for (int64_t b = 0; b < cols / g; ++b) {
        ASSERT_EQ(scales[b], engine.scales[r * engine.num_groups + b]) << r << " " << b;
        ASSERT_EQ(zeros[b], engine.zeros[r * engine.num_groups + b]) << r << " " << b;
      }
    }
  }
}

TEST(AwqScales, RatioZeroIsOneAndTheRangeIsCentredOnOne) {
  const std::vector<float> m = {0.5f, 2.0f, 0.0f, 8.0f};
  for (float s : AwqScales(m, 0.0)) EXPECT_EQ(s, 1.0f);
  const std::vector<float> s = AwqScales(m, 0.5);
  // m^0.5 = {0.707, 1.414, floor 1e-4, 2.828}; normalised by sqrt(2.828 * 1e-4).
  const double norm = std::sqrt(std::sqrt(8.0) * 1e-4);
  EXPECT_FLOAT_EQ(s[1], static_cast<float>(std::sqrt(2.0) / norm));
  EXPECT_FLOAT_EQ(s[2], static_cast<float>(1e-4 / norm));
  EXPECT_NEAR(static_cast<double>(s[2]) * s[3], 1.0, 1e-6);  // max * min = 1
}

TEST(ActivationSampler, KeepsTheChosenRowsInOrderAndTheMeans) {
  ModelConfig config;
  config.num_hidden_layers = 1;
  ActivationSampler sampler(config, /*expected_tokens=*/100, /*max_rows=*/10);
  std::vector<float> x(100 * 2);
  for (int t = 0; t < 100; ++t) {
    x[2 * t] = static_cast<float>(t);
    x[2 * t + 1] = -1.0f;
  }
  // Three calls, as windows would arrive.
  sampler.OnLinearInput(0, ActivationObserver::Site::kQkvInput, x.data(), 40, 2);
  sampler.OnLinearInput(0, ActivationObserver::Site::kQkvInput, x.data() + 80, 35, 2);
  sampler.OnLinearInput(0, ActivationObserver::Site::kQkvInput, x.data() + 150, 25, 2);
  const SiteSample& s = sampler.sample(0, ActivationObserver::Site::kQkvInput);
  ASSERT_EQ(s.n(), 10);
  EXPECT_EQ(s.seen, 100);
  EXPECT_EQ(sampler.tokens_seen(), 100);
  for (int64_t i = 0; i < s.n(); ++i) {
    EXPECT_EQ(s.rows[2 * i + 1], -1.0f);
    if (i > 0) {
      EXPECT_LT(s.rows[2 * (i - 1)], s.rows[2 * i]);  // increasing token order, no repeats
    }
  }
  const std::vector<float> mean = s.MeanAbs();
  EXPECT_FLOAT_EQ(mean[0], 49.5f);
  EXPECT_FLOAT_EQ(mean[1], 1.0f);
}

}  // namespace
}  // namespace tandem::cli
