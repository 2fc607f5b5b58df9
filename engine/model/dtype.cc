// Scalar conversions for the weight dtypes: exact IEEE 754 binary16 <-> binary32.
// F16ToFloat is exact for every half value (subnormals, infinities, NaN
// payloads). FloatToF16 rounds to nearest, ties to even, overflows to infinity
// and keeps NaN a NaN (quiet, with the top payload bits kept).
// Thread-safety: pure functions.
#include "engine/model/dtype.h"

#include <cstdint>
#include <cstring>

namespace tandem {
namespace {

float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint32_t FloatToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

}  // namespace

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "UNKNOWN";
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in binary32.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return BitsToFloat(sign | FloatToBits(magnitude));
  }
  if (exponent == 0x1f) {  // infinity or NaN (payload kept)
    return BitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  }
  // Normal: rebias the exponent from 15 to 127.
  return BitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

uint16_t FloatToF16(float f) {
  const uint32_t bits = FloatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t x = bits & 0x7fffffffu;  // magnitude

  if (x >= 0x7f800000u) {  // infinity or NaN
    if (x == 0x7f800000u) return sign | 0x7c00u;
    return static_cast<uint16_t>(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
  }
  // 65520 is halfway between 65504 (largest half, odd mantissa) and 65536:
  // ties to even round it, and everything above, to infinity.
  if (x >= 0x477ff000u) return sign | 0x7c00u;
  if (x >= 0x38800000u) {  // normal half (>= 2^-14)
    // Add the rounding bias; a carry out of the mantissa bumps the exponent.
    const uint32_t rounded = x + 0xfffu + ((x >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
  // 2^-25 is halfway between 0 and the smallest subnormal 2^-24: ties to even.
  if (x <= 0x33000000u) return sign;
  // Subnormal half: value * 2^24, rounded; the float is normal here.
  const uint32_t exponent = x >> 23;  // 102..112
  const uint32_t mantissa = (x & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - exponent;  // 14..24
  uint32_t result = mantissa >> shift;
  const uint32_t remainder = mantissa & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (remainder > half || (remainder == half && (result & 1u))) ++result;
  return static_cast<uint16_t>(sign | result);  // may carry into 0x0400: correct
}

float E4M3ToFloat(uint8_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t magnitude = code & 0x7fu;
  if (magnitude == 0x7fu) return BitsToFloat(sign | 0x7fc00000u);
  // The exponent and mantissa bits placed under a float's: a normal code
  // becomes 2^(e - 127) (1 + m/8), a subnormal one the float subnormal
  // m * 2^-129; both times 2^120 are the E4M3 value, exactly.
  return BitsToFloat(sign | FloatToBits(BitsToFloat(magnitude << 20) * 0x1p120f));
}

uint8_t FloatToE4M3(float f) {
  const uint32_t bits = FloatToBits(f);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t x = bits & 0x7fffffffu;
  if (x > 0x7f800000u) return 0x7f;          // NaN
  if (x >= 0x43e00000u) return sign | 0x7e;  // >= 448 (and infinity): saturate
  if (x >= 0x3c800000u) {                    // normal E4M3 (>= 2^-6)
    // Keep 3 mantissa bits, rounding to nearest even; a carry bumps the
    // exponent (at most to 448's code: 464 and up saturated above).
    const uint32_t rounded = x + 0x7ffffu + ((x >> 20) & 1u);
    return static_cast<uint8_t>(sign | ((rounded - 0x3c000000u) >> 20));
  }
  // Subnormal E4M3: |f| / 2^-9 rounded to nearest even, 0..8 (8 is the
  // smallest normal, 0x08: the same code). Exact in float: |f| < 2^-6.
  const float units = BitsToFloat(x) * 0x1p9f;
  const float r = units - static_cast<float>(static_cast<int>(units));  // fraction
  int q = static_cast<int>(units);
  if (r > 0.5f || (r == 0.5f && (q & 1))) ++q;
  return static_cast<uint8_t>(sign | q);
}

}  // namespace tandem
