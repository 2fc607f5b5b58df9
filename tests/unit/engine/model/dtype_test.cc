// Tests for engine/model/dtype: F16 conversions checked exhaustively against
// the compiler's _Float16 (and hand-made values), BF16 rounding, names, sizes.
#include "engine/model/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace tandem {
namespace {

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

bool IsHalfNan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

#if defined(__FLT16_MAX__)
float ReferenceF16ToFloat(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, sizeof v);
  return static_cast<float>(v);
}

uint16_t ReferenceFloatToF16(float f) {
  _Float16 v = static_cast<_Float16>(f);
  uint16_t h;
  std::memcpy(&h, &v, sizeof h);
  return h;
}

TEST(DTypeTest, F16ToFloatMatchesFloat16ForAll65536Values) {
  for (uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float got = F16ToFloat(h);
    const float want = ReferenceF16ToFloat(h);
    if (IsHalfNan(h)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << i;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << std::hex << i;
    } else {
      ASSERT_EQ(Bits(got), Bits(want)) << std::hex << i;
    }
  }
}

TEST(DTypeTest, FloatToF16MatchesFloat16NearEveryHalfValue) {
  // Each half value, the midpoints to its neighbours, and one float ulp either
  // side of those: every rounding decision (ties to even, subnormals, overflow).
  for (uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<uint16_t>(i);
    if (IsHalfNan(h)) continue;
    const float v = F16ToFloat(h);
    const float next = F16ToFloat(static_cast<uint16_t>(h + 1));
    float probes[] = {v, std::nextafter(v, 0.0f), std::nextafter(v, 2 * v + 1)};
    for (float p : probes) {
      ASSERT_EQ(FloatToF16(p), ReferenceFloatToF16(p)) << std::hex << Bits(p);
    }
    if ((h & 0x7fff) < 0x7c00 && !std::isnan(next)) {
      const float mid = static_cast<float>((static_cast<double>(v) + next) / 2);
      for (float p : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 2 * mid + 1)}) {
        ASSERT_EQ(FloatToF16(p), ReferenceFloatToF16(p)) << std::hex << Bits(p);
      }
    }
  }
}

TEST(DTypeTest, FloatToF16MatchesFloat16OnStridedFloatSweep) {
  for (uint64_t b = 0; b <= 0xffffffffull; b += 997) {
    const float f = FromBits(static_cast<uint32_t>(b));
    const uint16_t got = FloatToF16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(IsHalfNan(got)) << std::hex << b;
    } else {
      ASSERT_EQ(got, ReferenceFloatToF16(f)) << std::hex << b;
    }
  }
}
#endif  // __FLT16_MAX__

TEST(DTypeTest, F16HandMadeValues) {
  EXPECT_EQ(F16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(F16ToFloat(0x8000)));
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(F16ToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(F16ToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToFloat(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7e00)));

  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);  // tie rounds to even: infinity
  EXPECT_EQ(FloatToF16(1e9f), 0x7c00);
  EXPECT_EQ(FloatToF16(-1e9f), 0xfc00);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(IsHalfNan(FloatToF16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(IsHalfNan(FloatToF16(FromBits(0x7f800001))));  // payload only in low bits
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);      // tie to even: zero
  EXPECT_EQ(FloatToF16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToF16(std::ldexp(1.5f, -24)), 0x0002);   // 1.5 ulp: tie to even 2
  EXPECT_EQ(FloatToF16(std::ldexp(2.5f, -24)), 0x0002);   // 2.5 ulp: tie to even 2
  EXPECT_EQ(FloatToF16(std::ldexp(1023.5f, -24)), 0x0400);  // carries into normal
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie: even
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie: even
  EXPECT_EQ(FloatToF16(1e-10f), 0x0000);
  EXPECT_EQ(FloatToF16(-1e-10f), 0x8000);
}

TEST(DTypeTest, FloatToF16RoundTripsEveryHalfValue) {
  for (uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<uint16_t>(i);
    if (IsHalfNan(h)) {
      EXPECT_TRUE(IsHalfNan(FloatToF16(F16ToFloat(h)))) << std::hex << i;
    } else {
      ASSERT_EQ(FloatToF16(F16ToFloat(h)), h) << std::hex << i;
    }
  }
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(FloatToBf16(FromBits(0x3f808000)), 0x3f80);  // tie: even (down)
  EXPECT_EQ(FloatToBf16(FromBits(0x3f818000)), 0x3f82);  // tie: even (up)
  EXPECT_EQ(FloatToBf16(FromBits(0x3f808001)), 0x3f81);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(FromBits(0x7f800001)))));
  for (uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<uint16_t>(i);
    if ((h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0) continue;  // NaN
    ASSERT_EQ(FloatToBf16(Bf16ToFloat(h)), h) << std::hex << i;
  }
}

TEST(DTypeTest, NamesAndSizes) {
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
  EXPECT_EQ(DTypeName(DType::kF16), "F16");
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeName(DType::kF8E4M3), "F8_E4M3");
  EXPECT_EQ(DTypeName(DType::kI8), "I8");
  EXPECT_EQ(DTypeName(DType::kU8), "U8");
  EXPECT_EQ(DTypeName(DType::kI32), "I32");
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
  EXPECT_EQ(DTypeSize(DType::kI8), 1u);
  EXPECT_EQ(DTypeSize(DType::kU8), 1u);
  EXPECT_EQ(DTypeSize(DType::kI32), 4u);
  EXPECT_EQ(DTypeName(DType::kI64), "I64");
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_TRUE(IsFloatDType(DType::kBF16));
  EXPECT_FALSE(IsFloatDType(DType::kF8E4M3));
  EXPECT_FALSE(IsFloatDType(DType::kI32));
}

// E4M3 from its definition: (-1)^s 2^(e-7) (1 + m/8), or 2^-6 (m/8) when e = 0.
double E4M3Definition(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

TEST(DTypeTest, E4M3DecodesEveryCodeByItsDefinition) {
  for (int code = 0; code < 256; ++code) {
    const float f = E4M3ToFloat(static_cast<uint8_t>(code));
    if ((code & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(f)) << code;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), E4M3Definition(code)) << code;
    EXPECT_EQ(std::signbit(f), code >= 128) << code;
  }
  EXPECT_EQ(E4M3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(E4M3ToFloat(0x01), std::ldexp(1.0f, -9));
}

// The nearest finite code by search, ties to the even code (even mantissa).
uint8_t NearestE4M3(float f) {
  int best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  for (int code = 0; code < 0x7f; ++code) {
    const double err = std::fabs(std::fabs(static_cast<double>(f)) - E4M3Definition(code));
    if (err < best_err || (err == best_err && (code & 1) == 0)) {
      best = code;
      best_err = err;
    }
  }
  return static_cast<uint8_t>(best | (std::signbit(f) ? 0x80 : 0));
}

TEST(DTypeTest, E4M3EncodesToTheNearestCodeTiesToEven) {
  // Every code round-trips; every midpoint between neighbours and points
  // near it go to the code the search picks.
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;
    const float f = E4M3ToFloat(static_cast<uint8_t>(code));
    ASSERT_EQ(FloatToE4M3(f), code) << code;
    if ((code & 0x7f) < 0x7e) {
      const float next = E4M3ToFloat(static_cast<uint8_t>(code + 1));
      const float mid = (f + next) / 2;  // exact: both have few bits
      for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 2 * next), (f + mid) / 2}) {
        ASSERT_EQ(FloatToE4M3(v), NearestE4M3(v)) << code << " " << v;
      }
    }
  }
  EXPECT_EQ(FloatToE4M3(-0.0f), 0x80);
  EXPECT_EQ(FloatToE4M3(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal: ties to even (0)
  EXPECT_EQ(FloatToE4M3(std::ldexp(3.0f, -10)), 0x02);  // 1.5 units: ties to even (2)
  EXPECT_EQ(FloatToE4M3(std::ldexp(1.0f, -30)), 0x00);
}

TEST(DTypeTest, E4M3SaturatesAndKeepsNaN) {
  EXPECT_EQ(FloatToE4M3(448.0f), 0x7e);
  EXPECT_EQ(FloatToE4M3(463.9f), 0x7e);
  EXPECT_EQ(FloatToE4M3(1e30f), 0x7e);
  EXPECT_EQ(FloatToE4M3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(FloatToE4M3(std::numeric_limits<float>::quiet_NaN()), 0x7f);
}

}  // namespace
}  // namespace tandem
