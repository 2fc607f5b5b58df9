// Tests for kernels::PagedAttention and WriteKv at every ISA level this
// machine has: close to a float64 softmax reference on odd shapes (head_dim
// 64, 80, 24 and 136; GQA groups 1, 3 and 4; blocks of 16 and 5 tokens;
// sliding windows; fp32, bf16, fp16, int8 and fp8 caches; contexts 1..300), and
// bit-identical for one query token however it is computed: alone (decode),
// inside a prompt chunk or a whole prompt, inside a batch of other
// sequences, on 1 or 2 threads, with 5- or 16-token blocks, at AVX2 or
// AVX-512. Each sequence's K/V and queries are a pure function of (seed,
// position), so every run of the same sequence sees the same numbers.
//
// Quantized caches are checked against the float64 softmax over the values
// the cache stands for (int8: code * the row's scale; fp8: E4M3ToFloat(code)
// * the head's scale, both in float64), with the float caches' tolerance:
// the kernel widens codes exactly, and the only roundings it adds to the
// float path are k_mul = k_scale * scale and e * v_mul, one fp32 rounding
// (2^-24 relative) each, on scores and weights whose error the float
// caches already bound by 5e-6 at the same value ranges (K, V, q in [-2, 2)
// before quantization).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "engine/kernels/ops.h"
#include "engine/kernels/paged_attention.h"
#include "engine/model/dtype.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"
#include "gtest/gtest.h"
#include "tests/unit/kernels/kv_test_util.h"

namespace tandem::kernels {
namespace {

struct Layout {
  DType dtype = DType::kF32;
  int64_t block_size = 16;
  int64_t num_heads = 9;
  int64_t num_kv_heads = 3;
  int64_t head_dim = 64;
  int64_t window = 0;
};

// One sequence of a batch: `num_query` tokens ending at position context - 1.
struct SeqSpec {
  uint64_t seed;
  int32_t context;
  int32_t num_query;
};

// A value in [-2, 2) that depends only on its arguments (splitmix64).
float Value(uint64_t seed, uint64_t pos, uint64_t index) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + pos * 0xbf58476d1ce4e5b9ull + index + 1;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) / static_cast<float>(1 << 24) * 4.0f - 2.0f;
}

AttentionShape Shape(const Layout& l) {
  return {l.num_heads, l.num_kv_heads, l.head_dim, static_cast<float>(1.0 / std::sqrt(double(l.head_dim))),
          l.window};
}

// A cache holding `specs` (their blocks interleaved and reversed, so block
// ids are not contiguous), the batch of their query tokens and the queries.
struct Scenario {
  KvCache cache;
  ForwardBatch batch;
  std::vector<float> q;  // [tokens][num_heads * head_dim]
  std::vector<float> fp8_k, fp8_v;  // [num_kv_heads]: static scales, used by fp8 caches

  KvHeadScales Scales() const { return {fp8_k.data(), fp8_v.data()}; }

  Scenario(const Layout& l, const std::vector<SeqSpec>& specs)
      : cache(KvCacheShape{1, NumBlocks(l, specs), l.block_size, l.num_kv_heads, l.head_dim, l.dtype}),
        fp8_k(testing::Fp8TestScales(l.num_kv_heads, 0)),
        fp8_v(testing::Fp8TestScales(l.num_kv_heads, 1)) {
    const int64_t kv_dim = l.num_kv_heads * l.head_dim, q_dim = l.num_heads * l.head_dim;
    int32_t next_block = static_cast<int32_t>(cache.shape().num_blocks) - 1;
    for (size_t s = 0; s < specs.size(); ++s) {
      const SeqSpec& spec = specs[s];
      SequenceSlice slice{spec.num_query, spec.context, {}};
      for (int64_t b = 0; b < (spec.context + l.block_size - 1) / l.block_size; ++b) {
        slice.block_table.push_back(next_block--);
      }
      // Every position's K/V, written the way the model writes them.
      ForwardBatch fill;
      std::vector<float> k, v;
      for (int32_t p = 0; p < spec.context; ++p) {
        fill.token_ids.push_back(0);
        fill.positions.push_back(p);
        fill.slot_mapping.push_back(slice.block_table[p / l.block_size] * l.block_size + p % l.block_size);
        for (int64_t i = 0; i < kv_dim; ++i) {
          k.push_back(Value(spec.seed, p, i));
          v.push_back(Value(spec.seed, p, kv_dim + i));
        }
      }
      WriteKv(fill, cache, 0, k.data(), v.data(), kv_dim, Scales());
      for (int32_t p = spec.context - spec.num_query; p < spec.context; ++p) {
        batch.token_ids.push_back(0);
        batch.positions.push_back(p);
        batch.slot_mapping.push_back(fill.slot_mapping[p]);
        for (int64_t i = 0; i < q_dim; ++i) q.push_back(Value(spec.seed, p, 2 * kv_dim + i));
      }
      batch.seqs.push_back(std::move(slice));
    }
  }

  static int64_t NumBlocks(const Layout& l, const std::vector<SeqSpec>& specs) {
    int64_t n = 0;
    for (const SeqSpec& s : specs) n += (s.context + l.block_size - 1) / l.block_size;
    return n;
  }

  std::vector<float> Attend(const Layout& l) const {
    std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
    PagedAttention(batch, cache, 0, Shape(l), q.data(), l.num_heads * l.head_dim, out.data(), Scales());
    return out;
  }

  // Softmax attention in float64 over the values the cache holds.
  std::vector<double> Reference(const Layout& l) const {
    const int64_t hd = l.head_dim, group = l.num_heads / l.num_kv_heads, q_dim = l.num_heads * hd;
    std::vector<double> out(q.size());
    std::vector<double> key(hd), value(hd);
    int32_t token = 0;
    for (const SequenceSlice& seq : batch.seqs) {
      for (int32_t i = 0; i < seq.num_query_tokens; ++i, ++token) {
        const int64_t pos = batch.positions[token];
        const int64_t first = l.window > 0 ? std::max<int64_t>(0, pos + 1 - l.window) : 0;
        for (int64_t h = 0; h < l.num_heads; ++h) {
          std::vector<double> scores;
          for (int64_t p = first; p <= pos; ++p) {
            const int64_t slot = seq.block_table[p / l.block_size] * l.block_size + p % l.block_size;
            testing::StoredRow(cache, 0, slot, h / group, 0, Scales(), key.data());
            double dot = 0;
            for (int64_t d = 0; d < hd; ++d) dot += double(q[token * q_dim + h * hd + d]) * key[d];
            scores.push_back(dot * Shape(l).scale);
          }
          const double max = *std::max_element(scores.begin(), scores.end());
          double denom = 0;
          for (double& s : scores) denom += (s = std::exp(s - max));
          for (int64_t p = first; p <= pos; ++p) {
            const int64_t slot = seq.block_table[p / l.block_size] * l.block_size + p % l.block_size;
            testing::StoredRow(cache, 0, slot, h / group, 1, Scales(), value.data());
            for (int64_t d = 0; d < hd; ++d) out[token * q_dim + h * hd + d] += scores[p - first] / denom * value[d];
          }
        }
      }
    }
    return out;
  }
};

// Output rows of sequence `index` in a run's flat output.
std::vector<float> SeqRows(const Layout& l, const std::vector<SeqSpec>& specs, size_t index,
                           const std::vector<float>& out) {
  int64_t token = 0;
  for (size_t s = 0; s < index; ++s) token += specs[s].num_query;
  const int64_t q_dim = l.num_heads * l.head_dim;
  return {out.begin() + token * q_dim, out.begin() + (token + specs[index].num_query) * q_dim};
}

std::vector<CpuIsa> Levels() {
  std::vector<CpuIsa> out{CpuIsa::kAvx2};
  if (DetectedCpuIsa() >= CpuIsa::kAvx512) out.push_back(CpuIsa::kAvx512);
  return out;
}

class PagedAttentionTest : public ::testing::Test {
 protected:
  void TearDown() override {
    SetCpuIsa(DetectedCpuIsa());
    omp_set_num_threads(threads_);
  }
  const int threads_ = omp_get_max_threads();
};

TEST_F(PagedAttentionTest, MatchesFloat64Reference) {
  // Decodes, a whole short prompt, prompt chunks after a cached prefix.
  const std::vector<SeqSpec> specs = {{1, 1, 1}, {2, 17, 17}, {3, 300, 40}, {4, 129, 1}, {5, 64, 23}};
  for (CpuIsa isa : Levels()) {
    SetCpuIsa(isa);
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kI8, DType::kF8E4M3}) {
      for (int64_t head_dim : {64, 80, 24}) {
        for (auto [heads, kv_heads] : {std::pair{4, 4}, std::pair{9, 3}, std::pair{8, 2}}) {
          for (int64_t block_size : {16, 5}) {
            for (int64_t window : {0, 37}) {
              const Layout l{dtype, block_size, heads, kv_heads, head_dim, window};
              const Scenario run(l, specs);
              const std::vector<float> got = run.Attend(l);
              const std::vector<double> want = run.Reference(l);
              double max_err = 0;
              for (size_t i = 0; i < got.size(); ++i) max_err = std::max(max_err, std::abs(got[i] - want[i]));
              ASSERT_LT(max_err, 5e-6) << CpuIsaName(isa) << " " << DTypeName(dtype) << " head_dim=" << head_dim
                                       << " heads=" << heads << "/" << kv_heads << " block=" << block_size
                                       << " window=" << window;
            }
          }
        }
      }
    }
  }
}

TEST_F(PagedAttentionTest, WideHeadsMatchReference) {
  // head_dim 136: not a multiple of 16, and past the specialised widths.
  const std::vector<SeqSpec> specs = {{6, 90, 90}, {7, 40, 1}};
  for (CpuIsa isa : Levels()) {
    SetCpuIsa(isa);
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8, DType::kF8E4M3}) {
      const Layout l{dtype, 16, 6, 2, 136, 0};
      const Scenario run(l, specs);
      const std::vector<float> got = run.Attend(l);
      const std::vector<double> want = run.Reference(l);
      for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 5e-6) << CpuIsaName(isa) << " " << i;
    }
  }
}

// The target sequence's 37 last tokens, computed many ways, give the same bits.
TEST_F(PagedAttentionTest, OneQueryGivesTheSameBitsEveryWay) {
  constexpr uint64_t kSeed = 42;
  constexpr int32_t kContext = 150, kChunk = 37;
  const int64_t hd_list[] = {64, 80};
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kI8, DType::kF8E4M3}) {
    for (int64_t head_dim : hd_list) {
      for (int64_t window : {0, 50}) {
        Layout l{dtype, 16, 9, 3, head_dim, window};
        const int64_t q_dim = l.num_heads * head_dim;
        std::vector<float> first;  // the first way's rows, [kChunk][q_dim]
        auto expect_same = [&](const std::vector<float>& rows, const char* how, CpuIsa isa) {
          if (first.empty()) {
            first = rows;
            return;
          }
          ASSERT_EQ(rows.size(), first.size());
          for (size_t i = 0; i < rows.size(); ++i) {
            ASSERT_EQ(rows[i], first[i]) << how << " " << CpuIsaName(isa) << " " << DTypeName(dtype)
                                         << " head_dim=" << head_dim << " window=" << window << " row "
                                         << i / q_dim;
          }
        };
        for (CpuIsa isa : Levels()) {
          SetCpuIsa(isa);
          for (int threads : {1, 2}) {
            omp_set_num_threads(threads);
            for (int64_t block_size : {16, 5}) {
              l.block_size = block_size;
              // Decode: each position alone, one token, context = position + 1.
              std::vector<float> decode;
              for (int32_t p = kContext - kChunk; p < kContext; ++p) {
                const std::vector<SeqSpec> one = {{kSeed, p + 1, 1}};
                const std::vector<float> rows = Scenario(l, one).Attend(l);
                decode.insert(decode.end(), rows.begin(), rows.end());
              }
              expect_same(decode, "decode", isa);
              // A prompt chunk after a cached prefix.
              const std::vector<SeqSpec> chunk = {{kSeed, kContext, kChunk}};
              expect_same(Scenario(l, chunk).Attend(l), "chunk", isa);
              // The whole prompt at once: its last kChunk rows.
              const std::vector<SeqSpec> whole = {{kSeed, kContext, kContext}};
              const std::vector<float> all = Scenario(l, whole).Attend(l);
              expect_same({all.end() - kChunk * q_dim, all.end()}, "whole prompt", isa);
              // Inside a batch of other sequences, decodes and prompts.
              const std::vector<SeqSpec> mixed = {{1, 90, 1}, {2, 33, 33}, {kSeed, kContext, kChunk}, {3, 200, 20}};
              expect_same(SeqRows(l, mixed, 2, Scenario(l, mixed).Attend(l)), "batched", isa);
            }
          }
        }
      }
    }
  }
}

// The decode kernel for BF16, int8 and fp8 rows (one token, its GQA group
// in slices of up to 4 rows sharing each widened K/V row) against the prompt
// path (rows widened into scratch) and AVX2, for every group-slice shape and
// head width it specialises: groups 1-8 (slices 4+4, 4+1, 3, 2, 1), head_dim
// 48 (BF16: a pair group plus an element-order tail), 96 and 128 (several
// column blocks), and 72 (not a multiple of 16: decode takes the generic
// path).
TEST_F(PagedAttentionTest, DecodeGroupsGiveThePromptBits) {
  constexpr uint64_t kSeed = 7;
  constexpr int32_t kContext = 70, kLast = 5;
  for (DType dtype : {DType::kBF16, DType::kI8, DType::kF8E4M3}) {
    for (int64_t head_dim : {48, 72, 96, 128}) {
      for (auto [heads, kv_heads] : {std::pair{2, 2}, std::pair{4, 2}, std::pair{6, 2}, std::pair{8, 2},
                                     std::pair{10, 2}, std::pair{16, 2}}) {
        const Layout l{dtype, 16, heads, kv_heads, head_dim, 0};
        const int64_t q_dim = heads * head_dim;
        const std::vector<SeqSpec> whole = {{kSeed, kContext, kContext}};
        const std::vector<float> all = Scenario(l, whole).Attend(l);
        const std::vector<float> want(all.end() - kLast * q_dim, all.end());
        // And the float64 reference, so that the shared bits are also right.
        const std::vector<double> ref = Scenario(l, whole).Reference(l);
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_NEAR(want[i], ref[ref.size() - want.size() + i], 5e-6)
              << DTypeName(dtype) << " head_dim=" << head_dim << " heads=" << heads;
        }
        for (CpuIsa isa : Levels()) {
          SetCpuIsa(isa);
          for (int32_t p = kContext - kLast; p < kContext; ++p) {
            const std::vector<SeqSpec> one = {{kSeed, p + 1, 1}};
            const std::vector<float> got = Scenario(l, one).Attend(l);
            for (int64_t i = 0; i < q_dim; ++i) {
              ASSERT_EQ(got[i], want[(p - (kContext - kLast)) * q_dim + i])
                  << CpuIsaName(isa) << " " << DTypeName(dtype) << " head_dim=" << head_dim << " heads=" << heads
                  << "/" << kv_heads << " position " << p << " element " << i;
            }
          }
        }
        SetCpuIsa(DetectedCpuIsa());
      }
    }
  }
}

TEST_F(PagedAttentionTest, WriteKvRoundsLikeTheScalarConversions) {
  const float specials[] = {0.0f, -0.0f, 1.0f, -1.5f, 65504.0f, 65520.0f, 1e6f, -1e-7f, 3e-5f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(),
                            1.00390625f /* bf16 tie */, 1.01171875f /* bf16 tie, odd */};
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 10.0f);
  const int64_t kv_heads = 2, head_dim = 83, kv_dim = kv_heads * head_dim;
  std::vector<float> k(3 * kv_dim), v(3 * kv_dim);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = i < std::size(specials) ? specials[i] : dist(rng);
    v[i] = i % 7 == 0 ? specials[i % std::size(specials)] : dist(rng);
  }
  ForwardBatch batch;
  batch.token_ids = {0, 0, 0};
  batch.positions = {0, 1, 2};
  batch.slot_mapping = {9, 2, 5};
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    KvCache cache(KvCacheShape{2, 3, 4, kv_heads, head_dim, dtype});
    WriteKv(batch, cache, 1, k.data(), v.data(), kv_dim);
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t h = 0; h < kv_heads; ++h) {
        for (int kv = 0; kv < 2; ++kv) {
          const float* src = (kv == 0 ? k.data() : v.data()) + t * kv_dim + h * head_dim;
          const void* row = kv == 0 ? cache.Key(1, batch.slot_mapping[t], h) : cache.Value(1, batch.slot_mapping[t], h);
          for (int64_t d = 0; d < head_dim; ++d) {
            if (dtype == DType::kF32) {
              ASSERT_EQ(std::memcmp(static_cast<const float*>(row) + d, src + d, 4), 0);
              continue;
            }
            const uint16_t got = static_cast<const uint16_t*>(row)[d];
            const uint16_t want = dtype == DType::kBF16 ? FloatToBf16(src[d]) : FloatToF16(src[d]);
            ASSERT_EQ(got, want) << DTypeName(dtype) << " value " << src[d];
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace tandem::kernels
