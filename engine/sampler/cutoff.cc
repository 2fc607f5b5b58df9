#include "engine/sampler/cutoff.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

// Everything defined below is AVX2/FMA code; the library and the standard
// templates instantiated from the headers above stay at the build's
// baseline ISA (see lanes_avx2.h).
#pragma GCC target("avx2,fma")
#include "engine/sampler/lanes_avx2.h"
#include "engine/sampler/logit_math.h"

namespace tandem::sampling {
namespace {

constexpr int kBuckets = 2048;
constexpr int kNotCounted = kBuckets;  // bucket index of a token that does not count
constexpr size_t kSortAtMost = 256;    // a set this small is sorted rather than bucketed
constexpr int kMaxDepth = 6;           // then sorted anyway, whatever the value spacing
constexpr float kInf = std::numeric_limits<float>::infinity();

// A set of tokens as parallel arrays, ids ascending. A token counts when
// its weight is positive and its logit not NaN.
struct TokenSet {
  const float* logits;
  const float* weights;  // null: 1 each
  const int32_t* ids;    // null: the position is the id
  ptrdiff_t n;

  int32_t Id(ptrdiff_t k) const { return ids != nullptr ? ids[k] : static_cast<int32_t>(k); }
  float Weight(ptrdiff_t k) const { return weights != nullptr ? weights[k] : 1.0f; }
  // Lanes k..k+7 (padded): logits, and whether each counts.
  __m256 Logits8(ptrdiff_t k) const { return LoadPadded(logits + k, n - k, 0.0f); }
  __m256 Counts8(ptrdiff_t k, __m256 l) const {
    const __m256 w = weights != nullptr ? LoadPadded(weights + k, n - k, 0.0f)
                                        : _mm256_castsi256_ps(FirstLanes(n - k));
    const __m256 positive = weights != nullptr ? _mm256_cmp_ps(w, _mm256_setzero_ps(), _CMP_GT_OQ) : w;
    return _mm256_and_ps(positive, _mm256_cmp_ps(l, l, _CMP_ORD_Q));
  }
  // Candidate order on positions: logit descending, id ascending.
  bool Before(ptrdiff_t a, ptrdiff_t b) const {
    return logits[a] != logits[b] ? logits[a] > logits[b] : Id(a) < Id(b);
  }
  Cut At(ptrdiff_t k) const { return {logits[k], Id(k)}; }
};

// The counted tokens of a set, copied out.
struct Gathered {
  std::vector<float> logits, weights;
  std::vector<int32_t> ids;

  void Add(const TokenSet& s, ptrdiff_t k) {
    logits.push_back(s.logits[k]);
    weights.push_back(s.Weight(k));
    ids.push_back(s.Id(k));
  }
  TokenSet View() const {
    return {logits.data(), weights.data(), ids.data(), static_cast<ptrdiff_t>(ids.size())};
  }
};

// Takes the counted tokens at `positions`, in that order.
std::optional<Cut> Walk(const TokenSet& s, std::span<const ptrdiff_t> positions, double target) {
  double taken = 0.0;
  for (ptrdiff_t k : positions) {
    const float w = s.Weight(k);
    if (!(w > 0.0f) || std::isnan(s.logits[k])) continue;
    taken += w;
    if (taken >= target) return s.At(k);
  }
  return std::nullopt;
}

std::optional<Cut> SortAndWalk(const TokenSet& s, double target) {
  std::vector<ptrdiff_t> order(s.n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](ptrdiff_t a, ptrdiff_t b) { return s.Before(a, b); });
  return Walk(s, order, target);
}

// Value range of the counted tokens: the largest logit and the smallest
// finite one.
struct Range {
  float hi = -kInf, lo = kInf;
  bool any = false, any_neg_inf = false;
};

Range RangeOf(const TokenSet& s) {
  __m256 hi = _mm256_set1_ps(-kInf), lo = _mm256_set1_ps(kInf), any = _mm256_setzero_ps(), neg = any;
  const __m256 neg_inf = _mm256_set1_ps(-kInf);
  for (ptrdiff_t k = 0; k < s.n; k += kVec) {
    const __m256 l = s.Logits8(k);
    const __m256 counts = s.Counts8(k, l);
    const __m256 is_neg_inf = _mm256_and_ps(counts, _mm256_cmp_ps(l, neg_inf, _CMP_EQ_OQ));
    hi = _mm256_max_ps(hi, _mm256_blendv_ps(neg_inf, l, counts));
    lo = _mm256_min_ps(lo, _mm256_blendv_ps(_mm256_set1_ps(kInf), l, _mm256_andnot_ps(is_neg_inf, counts)));
    any = _mm256_or_ps(any, counts);
    neg = _mm256_or_ps(neg, is_neg_inf);
  }
  alignas(32) float h[kVec], l[kVec];
  _mm256_store_ps(h, hi);
  _mm256_store_ps(l, lo);
  return {*std::max_element(h, h + kVec), *std::min_element(l, l + kVec), _mm256_movemask_ps(any) != 0,
          _mm256_movemask_ps(neg) != 0};
}

// bucket[k] = floor((hi - logit) * scale), clamped to the last bucket (so
// -inf lands there), or kNotCounted. Computed in float: hi - l and the
// product round monotonically, so the index never decreases as the logit
// falls and each bucket is a run of the candidate order.
void BucketIndices(const TokenSet& s, float hi, float scale, std::vector<int32_t>& bucket) {
  bucket.resize(s.n + kVec);
  const __m256 top = _mm256_set1_ps(hi), sc = _mm256_set1_ps(scale);
  const __m256 last = _mm256_set1_ps(kBuckets - 1);
  const __m256i none = _mm256_set1_epi32(kNotCounted);
  for (ptrdiff_t k = 0; k < s.n; k += kVec) {
    const __m256 l = s.Logits8(k);
    // min_ps returns its second operand for NaN (inf * 0): the last bucket.
    const __m256 t = _mm256_min_ps(_mm256_mul_ps(_mm256_sub_ps(top, l), sc), last);
    const __m256i b = _mm256_cvttps_epi32(t);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(bucket.data() + k),
                        _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(none), _mm256_castsi256_ps(b),
                                                             s.Counts8(k, l))));
  }
}

std::optional<Cut> LastKeptIn(const TokenSet& s, double target, int depth) {
  if (s.n <= static_cast<ptrdiff_t>(kSortAtMost) || depth == kMaxDepth) return SortAndWalk(s, target);
  const Range r = RangeOf(s);
  if (!r.any) return std::nullopt;
  if (r.hi == -kInf || (r.hi == r.lo && !r.any_neg_inf)) {  // all tied: id order is the order
    std::vector<ptrdiff_t> all(s.n);
    std::iota(all.begin(), all.end(), 0);
    return Walk(s, all, target);
  }
  // hi goes to bucket 0, lo to the last (scale rounds to within 1e-7), so
  // every level splits the set.
  const double width = static_cast<double>(r.hi) - r.lo;
  const float scale = r.hi > r.lo ? static_cast<float>(std::min<double>(kBuckets / width, 3e38)) : 1.0f;
  thread_local std::array<std::vector<int32_t>, kMaxDepth> bucket_scratch;  // per level, reused
  std::vector<int32_t>& bucket = bucket_scratch[depth];
  BucketIndices(s, r.hi, scale, bucket);
  std::array<double, kBuckets + 1> mass{};
  for (ptrdiff_t k = 0; k < s.n; ++k) mass[bucket[k]] += s.Weight(k);
  double before = 0.0;
  int b = 0;
  for (; b < kBuckets; ++b) {
    if (before + mass[b] >= target) break;
    before += mass[b];
  }
  if (b == kBuckets) return std::nullopt;
  // before < target <= before + mass[b]: bucket b holds the last kept token.
  Gathered inside;
  const __m256i want = _mm256_set1_epi32(b);
  for (ptrdiff_t k = 0; k < s.n; k += kVec) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bucket.data() + k));
    // Lanes past the end hold kNotCounted, so they never match.
    unsigned hits = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, want)));
    for (; hits != 0; hits &= hits - 1) inside.Add(s, k + __builtin_ctz(hits));
  }
  const TokenSet in = inside.View();
  if (auto cut = LastKeptIn(in, target - before, depth + 1)) return cut;
  // Summed in another order, the bucket fell just short of its total: the
  // target is reached at its last token.
  ptrdiff_t last = 0;
  for (ptrdiff_t k = 1; k < in.n; ++k) {
    if (in.Before(last, k)) last = k;
  }
  return in.At(last);
}

// Top-k with k small against the row: the k-th largest of the maxima of
// 64-token blocks is a floor for the k-th largest logit (the k blocks with
// the largest maxima hold k tokens at or above it), so only tokens at or
// above the floor can be kept. Gathers those (a few times k, typically) and
// selects among them; nullopt when the floor does not narrow the row.
std::optional<std::optional<Cut>> TopKFromBlockMaxima(const TokenSet& all, int64_t k) {
  constexpr ptrdiff_t kBlock = 64;
  const ptrdiff_t num_blocks = (all.n + kBlock - 1) / kBlock;
  if (k > num_blocks / 4) return std::nullopt;
  std::vector<float> maxima(num_blocks);
  for (ptrdiff_t b = 0; b < num_blocks; ++b) {
    __m256 m = _mm256_set1_ps(-kInf);
    for (ptrdiff_t i = b * kBlock; i < std::min(all.n, (b + 1) * kBlock); i += kVec) {
      m = _mm256_max_ps(LoadPadded(all.logits + i, all.n - i, -kInf), m);  // NaN skipped
    }
    alignas(32) float lanes[kVec];
    _mm256_store_ps(lanes, m);
    maxima[b] = *std::max_element(lanes, lanes + kVec);
  }
  std::nth_element(maxima.begin(), maxima.begin() + (k - 1), maxima.end(), std::greater<float>());
  const float floor = maxima[k - 1];
  if (floor == -kInf) return std::nullopt;
  Gathered top;
  const __m256 f = _mm256_set1_ps(floor);
  for (ptrdiff_t i = 0; i < all.n; i += kVec) {
    const __m256 l = LoadPadded(all.logits + i, all.n - i, -kInf);
    for (unsigned hits = _mm256_movemask_ps(_mm256_cmp_ps(l, f, _CMP_GE_OQ)); hits != 0; hits &= hits - 1) {
      top.Add(all, i + __builtin_ctz(hits));
    }
  }
  return LastKeptIn(top.View(), static_cast<double>(k), 1);
}

}  // namespace

std::optional<Cut> LastKept(std::span<const float> logits, std::span<const float> weights, double target) {
  const TokenSet all{logits.data(), weights.empty() ? nullptr : weights.data(), nullptr,
                     static_cast<ptrdiff_t>(logits.size())};
  if (all.weights == nullptr && target >= 1.0 && target == std::floor(target)) {
    if (auto cut = TopKFromBlockMaxima(all, static_cast<int64_t>(target))) return *cut;
  }
  return LastKeptIn(all, target, 0);
}

std::optional<Cut> BeforeFirstBelow(std::span<const float> logits, std::span<const float> weights, float floor) {
  // The first such token in candidate order has the highest logit among
  // them, and the lowest id among those tied at it.
  const ptrdiff_t n = static_cast<ptrdiff_t>(logits.size());
  const __m256 fl = _mm256_set1_ps(floor);
  __m256 first = _mm256_set1_ps(-kInf), any = _mm256_setzero_ps();
  for (ptrdiff_t i = 0; i < n; i += kVec) {
    const __m256 l = LoadPadded(logits.data() + i, n - i, 0.0f);
    const __m256 w = LoadPadded(weights.data() + i, n - i, kInf);  // padding is never below
    const __m256 below = _mm256_and_ps(_mm256_cmp_ps(w, fl, _CMP_LT_OQ), _mm256_cmp_ps(l, l, _CMP_ORD_Q));
    any = _mm256_or_ps(any, below);
    first = _mm256_max_ps(first, _mm256_blendv_ps(_mm256_set1_ps(-kInf), l, below));
  }
  if (_mm256_movemask_ps(any) == 0) return std::nullopt;
  alignas(32) float lanes[kVec];
  _mm256_store_ps(lanes, first);
  const float top = *std::max_element(lanes, lanes + kVec);
  for (ptrdiff_t i = 0; i < n; ++i) {
    if (weights[i] < floor && logits[i] == top) return Cut{top, static_cast<int32_t>(i) - 1};
  }
  return std::nullopt;
}

void ApplyCut(const Cut& cut, std::span<const float> logits, std::span<float> weights) {
  const int32_t n = static_cast<int32_t>(logits.size());
  for (int32_t i = 0; i < n; ++i) weights[i] = cut.Keeps(logits[i], i) ? weights[i] : 0.0f;
}

std::optional<Cut> KeptWeights(const SamplingParams& params, std::span<const float> logits, std::span<float> weights) {
  ScaledExp(logits, params.temperature, MaxOf(logits), weights);
  // Each filter keeps a prefix of the candidate order; the tightest wins.
  std::optional<Cut> cut;
  auto tighten = [&](std::optional<Cut> c) {
    if (c) cut = cut ? Tighter(*cut, *c) : *c;
  };
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < logits.size()) {
    tighten(LastKept(logits, {}, params.top_k));
    if (cut) ApplyCut(*cut, logits, weights);  // top_p and min_p see only these
  }
  if (params.top_p < 1.0f) tighten(LastKept(logits, weights, params.top_p * SumOf(weights)));
  if (params.min_p > 0.0f) tighten(BeforeFirstBelow(logits, weights, params.min_p));
  if (cut) ApplyCut(*cut, logits, weights);
  return cut;
}

}  // namespace tandem::sampling
