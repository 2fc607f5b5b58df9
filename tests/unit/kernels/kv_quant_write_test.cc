// Int8 and fp8 KV caches: the block layout's sizes and addresses
// (kv_cache.h), and WriteKv's codes and scales, exactly, against hand-worked
// rows and against the rule computed independently in float64 (a float64
// quotient rounded once to fp32 is the correctly rounded fp32 division the
// rule names).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "engine/kernels/paged_attention.h"
#include "engine/model/dtype.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"
#include "gtest/gtest.h"
#include "tests/unit/kernels/kv_test_util.h"

namespace tandem::kernels {
namespace {

int64_t OffsetIn(const KvCache& cache, const void* p) {
  return static_cast<const uint8_t*>(p) - const_cast<KvCache&>(cache).Memory().data();
}

TEST(KvCacheQuantLayoutTest, PieceAndSpanSizes) {
  // 16-token blocks, head_dim 64, 3 KV heads, 2 layers, 5 blocks.
  const KvCacheShape bf16{2, 5, 16, 3, 64, DType::kBF16};
  EXPECT_EQ(bf16.head_piece_bytes(), 16 * 64 * 2);
  EXPECT_EQ(bf16.block_span_bytes(), 2 * 3 * 2048);
  const KvCacheShape i8{2, 5, 16, 3, 64, DType::kI8};
  EXPECT_EQ(i8.head_piece_bytes(), 16 * 64 + 16 * 4);  // 1088 = 17 lines: no padding
  EXPECT_EQ(i8.block_span_bytes(), 2 * 3 * 1088);
  EXPECT_EQ(i8.bytes_per_block(), 2 * 2 * 3 * 1088);
  EXPECT_EQ(i8.total_bytes(), 2 * 5 * 2 * 3 * 1088);
  const KvCacheShape f8{2, 5, 16, 3, 64, DType::kF8E4M3};
  EXPECT_EQ(f8.head_piece_bytes(), 16 * 64);
  EXPECT_EQ(f8.bytes_per_block(), 2 * 2 * 3 * 1024);
  // Odd sizes: 5-token blocks of head_dim 83. Codes 415 bytes; int8 scales
  // from 416 (4-byte aligned), 20 bytes; both pieces padded to 448.
  const KvCacheShape odd_i8{1, 4, 5, 2, 83, DType::kI8};
  EXPECT_EQ(odd_i8.scales_offset(), 416);
  EXPECT_EQ(odd_i8.head_piece_bytes(), 448);
  EXPECT_EQ(odd_i8.block_span_bytes(), 4 * 448);
  const KvCacheShape odd_f8{1, 4, 5, 2, 83, DType::kF8E4M3};
  EXPECT_EQ(odd_f8.head_piece_bytes(), 448);
  const KvCacheShape odd_f32{1, 4, 5, 2, 83, DType::kF32};  // float layouts are unchanged
  EXPECT_EQ(odd_f32.block_span_bytes(), 2 * 2 * 5 * 83 * 4);
}

TEST(KvCacheQuantLayoutTest, AddressesFollowThePieces) {
  const KvCacheShape s{2, 4, 5, 2, 83, DType::kI8};
  KvCache cache(s);
  const int64_t piece = 448, span = 4 * piece, layer_bytes = 4 * span;
  // Layer 1, block 3, offset 2 (slot 17); head 1; K then V.
  EXPECT_EQ(OffsetIn(cache, cache.Key(1, 17, 1)), layer_bytes + 3 * span + 1 * piece + 2 * 83);
  EXPECT_EQ(OffsetIn(cache, cache.Value(1, 17, 1)), layer_bytes + 3 * span + 3 * piece + 2 * 83);
  EXPECT_EQ(OffsetIn(cache, cache.KeyScale(1, 17, 1)), layer_bytes + 3 * span + 1 * piece + 416 + 2 * 4);
  EXPECT_EQ(OffsetIn(cache, cache.ValueScale(1, 17, 1)), layer_bytes + 3 * span + 3 * piece + 416 + 2 * 4);
  EXPECT_EQ(OffsetIn(cache, cache.BlockSpan(1, 3).data()), layer_bytes + 3 * span);
  EXPECT_EQ(static_cast<int64_t>(cache.BlockSpan(1, 3).size()), span);
  EXPECT_EQ(OffsetIn(cache, cache.BlockSpan(1, 3).data()) % 64, 0);
}

ForwardBatch Slots(std::vector<int64_t> slots) {
  ForwardBatch b;
  for (size_t i = 0; i < slots.size(); ++i) {
    b.token_ids.push_back(0);
    b.positions.push_back(static_cast<int32_t>(i));
    b.slot_mapping.push_back(slots[i]);
  }
  return b;
}

TEST(WriteKvQuantTest, Int8HandWorkedRows) {
  // head_dim 6, one head. max|row| 127 gives scale 1 exactly, so the codes
  // are rint(x): -63.5 and -2.5 tie to even (-64, -2), 0.5 to 0, 1.5 to 2.
  // Doubled, the scale is 2 (254 / 127) and the codes the same. The zero
  // row has scale 0 and codes 0.
  const std::vector<float> k = {127, -63.5f, 0.5f, 1.5f, -2.5f, 0,    // token 0
                                254, -127, 1, 3, -5, 0,              // token 1
                                0, 0, 0, 0, 0, 0};                   // token 2
  const std::vector<float> v = {0, 0, 0, 0, 0, -0.25f,  // scale 0.25 / 127
                                1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0};
  KvCache cache(KvCacheShape{1, 2, 4, 1, 6, DType::kI8});
  WriteKv(Slots({1, 6, 3}), cache, 0, k.data(), v.data(), 6);
  const int8_t want[] = {127, -64, 0, 2, -2, 0};
  for (int64_t slot : {1, 6}) {
    const auto* codes = static_cast<const int8_t*>(cache.Key(0, slot, 0));
    for (int d = 0; d < 6; ++d) EXPECT_EQ(codes[d], want[d]) << "slot " << slot << " d " << d;
  }
  EXPECT_EQ(*cache.KeyScale(0, 1, 0), 1.0f);
  EXPECT_EQ(*cache.KeyScale(0, 6, 0), 2.0f);
  EXPECT_EQ(*cache.KeyScale(0, 3, 0), 0.0f);
  for (int d = 0; d < 6; ++d) EXPECT_EQ(static_cast<const int8_t*>(cache.Key(0, 3, 0))[d], 0);
  EXPECT_EQ(*cache.ValueScale(0, 1, 0), 0.25f / 127.0f);
  EXPECT_EQ(static_cast<const int8_t*>(cache.Value(0, 1, 0))[5], -127);
  // 1..6: scale fp32(6/127); 1 / scale = 21.17 -> 21, and 3 / scale is
  // exactly 63.5 in fp32: ties to even, 64.
  const int8_t want_v[] = {21, 42, 64, 85, 106, 127};
  for (int d = 0; d < 6; ++d) EXPECT_EQ(static_cast<const int8_t*>(cache.Value(0, 6, 0))[d], want_v[d]) << d;
}

// The int8 rule in float64: scale = fp32(max / 127); code = rint(fp32(x /
// scale)) clamped; fp32(a / b) computed as a float64 quotient rounded once.
void ExpectInt8Row(const float* x, int64_t n, const int8_t* codes, float scale) {
  double max = 0;
  for (int64_t i = 0; i < n; ++i) max = std::max(max, std::abs(static_cast<double>(x[i])));
  const float want_scale = static_cast<float>(max / 127.0);
  ASSERT_EQ(scale, want_scale);
  for (int64_t i = 0; i < n; ++i) {
    const double q = want_scale == 0 ? 0 : std::nearbyint(static_cast<float>(x[i] / static_cast<double>(want_scale)));
    ASSERT_EQ(codes[i], static_cast<int8_t>(std::clamp(q, -127.0, 127.0))) << "element " << i << " x " << x[i];
  }
}

TEST(WriteKvQuantTest, Int8RandomRowsFollowTheRule) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  const int64_t heads = 3, hd = 83, kv_dim = heads * hd, tokens = 40;
  std::vector<float> k(tokens * kv_dim), v(tokens * kv_dim);
  for (float& x : k) x = dist(rng);
  for (size_t i = 0; i < v.size(); ++i) v[i] = dist(rng) * (i % 3 == 0 ? 1e-4f : 50.0f);
  std::vector<int64_t> slots;
  for (int64_t t = 0; t < tokens; ++t) slots.push_back((t * 7) % 45);  // 9 blocks of 5
  KvCache cache(KvCacheShape{2, 9, 5, heads, hd, DType::kI8});
  WriteKv(Slots(slots), cache, 1, k.data(), v.data(), kv_dim);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      ExpectInt8Row(&k[t * kv_dim + h * hd], hd, static_cast<const int8_t*>(cache.Key(1, slots[t], h)),
                    *cache.KeyScale(1, slots[t], h));
      ExpectInt8Row(&v[t * kv_dim + h * hd], hd, static_cast<const int8_t*>(cache.Value(1, slots[t], h)),
                    *cache.ValueScale(1, slots[t], h));
    }
  }
}

TEST(WriteKvQuantTest, Fp8HandWorkedAndRandomRows) {
  // Head 0 scale 2, head 1 scale 0.3. 3 / 2 = 1.5 = 0x3C (exponent 7, mantissa
  // 4); -1000 / 2 saturates to -448 = 0xFE; 2^-8 / 2 = 2^-9 is the smallest
  // subnormal, 0x01; 0 stays 0x00; -0 keeps its sign, 0x80.
  const std::vector<float> scales_k = {2.0f, 0.3f}, scales_v = {0.5f, 4.0f};
  const KvHeadScales scales{scales_k.data(), scales_v.data()};
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  const int64_t hd = 21, kv_dim = 2 * hd, tokens = 9;
  std::vector<float> k(tokens * kv_dim), v(tokens * kv_dim);
  for (float& x : k) x = dist(rng);
  for (float& x : v) x = dist(rng) * 100.0f;  // some saturate
  const float hand[] = {3.0f, -1000.0f, 0x1p-8f, 0.0f, -0.0f};
  std::copy(std::begin(hand), std::end(hand), k.begin());
  KvCache cache(KvCacheShape{1, 3, 4, 2, hd, DType::kF8E4M3});
  std::vector<int64_t> slots = {11, 0, 5, 6, 1, 2, 3, 9, 4};
  WriteKv(Slots(slots), cache, 0, k.data(), v.data(), kv_dim, scales);
  const uint8_t want_hand[] = {0x3C, 0xFE, 0x01, 0x00, 0x80};
  for (int d = 0; d < 5; ++d) EXPECT_EQ(static_cast<const uint8_t*>(cache.Key(0, 11, 0))[d], want_hand[d]) << d;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < 2; ++h) {
      for (int kv = 0; kv < 2; ++kv) {
        const float* x = (kv == 0 ? k : v).data() + t * kv_dim + h * hd;
        const double scale = kv == 0 ? scales_k[h] : scales_v[h];
        const void* row = kv == 0 ? cache.Key(0, slots[t], h) : cache.Value(0, slots[t], h);
        const auto* codes = static_cast<const uint8_t*>(row);
        for (int64_t d = 0; d < hd; ++d) {
          ASSERT_EQ(codes[d], FloatToE4M3(static_cast<float>(x[d] / scale))) << t << " " << h << " " << kv << " " << d;
          ASSERT_NE(codes[d] & 0x7f, 0x7f) << "a NaN code for a finite input";
        }
      }
    }
  }
}

TEST(WriteKvQuantTest, ABlockSpanCarriesItsScales) {
  // Copy-on-write and shipping copy a block's span and nothing else: the
  // copy must read back as the same numbers.
  KvCache cache(KvCacheShape{1, 3, 4, 2, 10, DType::kI8});
  std::vector<float> k(4 * 20), v(4 * 20);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = std::sin(static_cast<float>(i)) * (1.0f + i);
    v[i] = std::cos(static_cast<float>(i)) * 3.0f;
  }
  WriteKv(Slots({4, 5, 6, 7}), cache, 0, k.data(), v.data(), 20);  // block 1
  std::memcpy(cache.BlockSpan(0, 2).data(), cache.BlockSpan(0, 1).data(), cache.BlockSpan(0, 1).size());
  std::vector<double> a(10), b(10);
  for (int64_t offset = 0; offset < 4; ++offset) {
    for (int64_t h = 0; h < 2; ++h) {
      for (int kv = 0; kv < 2; ++kv) {
        testing::StoredRow(cache, 0, 4 + offset, h, kv, {}, a.data());
        testing::StoredRow(cache, 0, 8 + offset, h, kv, {}, b.data());
        EXPECT_EQ(a, b);
        EXPECT_NE(a, std::vector<double>(10, 0.0));
      }
    }
  }
}

}  // namespace
}  // namespace tandem::kernels
