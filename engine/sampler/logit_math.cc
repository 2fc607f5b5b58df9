#include "engine/sampler/logit_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

// Everything defined below is AVX2/FMA code; the library and the standard
// templates instantiated from the headers above stay at the build's
// baseline ISA (see lanes_avx2.h).
#pragma GCC target("avx2,fma")
#include "engine/kernels/cpu/exp_avx2.h"
#include "engine/sampler/lanes_avx2.h"

namespace tandem::sampling {
namespace {

constexpr ptrdiff_t kUnroll = 4;  // independent accumulators: hide add/max latency
constexpr ptrdiff_t kStride = kVec * kUnroll;
constexpr size_t kDrawBlock = 1024;  // DrawByWeight's coarse step
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Calls f(v, k, i) for the 8 elements from index i, which go to accumulator
// k = (i / 8) % 4. The last run of 32 comes padded with `pad`, so that it
// takes the same vector code.
template <class F>
void ForEach8(std::span<const float> x, float pad, F f) {
  const ptrdiff_t n = static_cast<ptrdiff_t>(x.size());
  ptrdiff_t i = 0;
  for (; i + kStride <= n; i += kStride) {
#pragma GCC unroll 4
    for (ptrdiff_t k = 0; k < kUnroll; ++k) f(_mm256_loadu_ps(x.data() + i + k * kVec), k, i + k * kVec);
  }
  if (i == n) return;
#pragma GCC unroll 4
  for (ptrdiff_t k = 0; k < kUnroll; ++k) {
    const ptrdiff_t at = i + k * kVec;
    if (at < n) f(LoadPadded(x.data() + at, n - at, pad), k, at);
  }
}

// e^x for x <= 0 (the sampler only exponentiates differences from a row's
// max), on the shared core (engine/kernels/cpu/exp_avx2.h): within 2 ulp;
// exactly 1 at 0, exactly 0 below ln(FLT_MIN) and at -inf.
__m256 ExpNonPositive(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(kernels::cpu::kExpLowest);
  const __m256 y = kernels::cpu::ExpCore8(_mm256_max_ps(x, lowest));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, lowest, _CMP_LT_OQ), y);
}

// Double accumulators, two per float vector: lanes 0-3 and 4-7.
struct DoubleLanes {
  __m256d lo[kUnroll], hi[kUnroll];
  DoubleLanes() {
    for (ptrdiff_t k = 0; k < kUnroll; ++k) lo[k] = hi[k] = _mm256_setzero_pd();
  }
  void Add(ptrdiff_t k, __m256 v) {
    lo[k] = _mm256_add_pd(lo[k], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    hi[k] = _mm256_add_pd(hi[k], _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  // All lanes summed in a fixed order.
  double Sum() const {
    alignas(32) double lanes[2 * kUnroll][4];
    for (ptrdiff_t k = 0; k < kUnroll; ++k) {
      _mm256_store_pd(lanes[2 * k], lo[k]);
      _mm256_store_pd(lanes[2 * k + 1], hi[k]);
    }
    double sum = 0.0;
    for (const auto& row : lanes) {
      for (double l : row) sum += l;
    }
    return sum;
  }
};

}  // namespace

float MaxOf(std::span<const float> x) {
  __m256 acc[kUnroll];
  for (__m256& a : acc) a = _mm256_set1_ps(kNegInf);
  // max_ps returns its second operand when either is NaN: NaN is skipped.
  ForEach8(x, kNegInf, [&](__m256 v, ptrdiff_t k, ptrdiff_t) { acc[k] = _mm256_max_ps(v, acc[k]); });
  const __m256 m = _mm256_max_ps(_mm256_max_ps(acc[0], acc[1]), _mm256_max_ps(acc[2], acc[3]));
  alignas(32) float lanes[kVec];
  _mm256_store_ps(lanes, m);
  return *std::max_element(lanes, lanes + kVec);
}

int32_t ArgMax(std::span<const float> x) {
  // Per lane, the first maximum it sees (strict '>'); then the best lane,
  // the lowest index among equal maxima.
  __m256 best[kUnroll];
  __m256i at[kUnroll];
  for (ptrdiff_t k = 0; k < kUnroll; ++k) {
    best[k] = _mm256_set1_ps(kNegInf);
    at[k] = _mm256_setzero_si256();
  }
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  ForEach8(x, kNegInf, [&](__m256 v, ptrdiff_t k, ptrdiff_t i) {
    const __m256 more = _mm256_cmp_ps(v, best[k], _CMP_GT_OQ);
    const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(i)), iota);
    best[k] = _mm256_blendv_ps(best[k], v, more);
    at[k] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(at[k]), _mm256_castsi256_ps(idx), more));
  });
  alignas(32) float b[kStride];
  alignas(32) int32_t a[kStride];
  for (ptrdiff_t k = 0; k < kUnroll; ++k) {
    _mm256_store_ps(b + k * kVec, best[k]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(a + k * kVec), at[k]);
  }
  // A lane that saw nothing above -inf still says 0: all -inf gives 0.
  ptrdiff_t w = 0;
  for (ptrdiff_t l = 1; l < kStride; ++l) {
    if (b[l] > b[w] || (b[l] == b[w] && a[l] < a[w])) w = l;
  }
  return a[w];
}

double LogSumExp(std::span<const float> x) {
  const float mx = MaxOf(x);
  if (!std::isfinite(mx)) return mx;
  const __m256 top = _mm256_set1_ps(mx);
  DoubleLanes acc;
  ForEach8(x, kNegInf, [&](__m256 v, ptrdiff_t k, ptrdiff_t) { acc.Add(k, ExpNonPositive(_mm256_sub_ps(v, top))); });
  return mx + std::log(acc.Sum());
}

void ScaledExp(std::span<const float> x, float temperature, float max, std::span<float> weights) {
  const __m256 t = _mm256_set1_ps(temperature);
  const __m256 top = _mm256_set1_ps(max / temperature);
  const ptrdiff_t n = static_cast<ptrdiff_t>(x.size());
  ForEach8(x, kNegInf, [&](__m256 v, ptrdiff_t, ptrdiff_t i) {
    const __m256 w = ExpNonPositive(_mm256_sub_ps(_mm256_div_ps(v, t), top));
    if (i + kVec <= n) {
      _mm256_storeu_ps(weights.data() + i, w);
    } else {
      _mm256_maskstore_ps(weights.data() + i, FirstLanes(n - i), w);
    }
  });
}

double SumOf(std::span<const float> x) {
  DoubleLanes acc;
  ForEach8(x, 0.0f, [&](__m256 v, ptrdiff_t k, ptrdiff_t) { acc.Add(k, v); });
  return acc.Sum();
}

int32_t DrawByWeight(std::span<const float> weights, double u01) {
  // Two levels: block sums (vectorised) pick the block, then a running sum
  // inside it picks the index, so the serial walk covers one block only.
  const size_t n = weights.size();
  std::vector<double> block_sums((n + kDrawBlock - 1) / kDrawBlock);
  double total = 0.0;
  for (size_t b = 0; b < block_sums.size(); ++b) {
    block_sums[b] = SumOf(weights.subspan(b * kDrawBlock, std::min(kDrawBlock, n - b * kDrawBlock)));
    total += block_sums[b];
  }
  if (!(total > 0.0)) return -1;
  const double u = u01 * total;
  double before = 0.0;
  size_t b = 0;
  // u < total, but rounding can put it at or past the last block's end: the
  // last block is then the one, and its last positive weight the pick.
  while (b + 1 < block_sums.size() && !(u < before + block_sums[b])) before += block_sums[b++];
  int32_t last_positive = -1;
  const size_t end = std::min(n, (b + 1) * kDrawBlock);
  for (size_t j = b * kDrawBlock; j < end; ++j) {
    if (!(weights[j] > 0.0f)) continue;
    before += weights[j];
    last_positive = static_cast<int32_t>(j);
    if (u < before) return last_positive;
  }
  if (last_positive >= 0) return last_positive;
  // The chosen block held no weight after all (rounding at its edge).
  for (size_t j = n; j-- > 0;) {
    if (weights[j] > 0.0f) return static_cast<int32_t>(j);
  }
  return -1;
}

}  // namespace tandem::sampling
