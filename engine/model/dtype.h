// Element types of weight files and the scalar conversions the kernels use.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace tandem {

// F32/F16/BF16 are the float element types weights, activations and the KV
// cache are kept in. The rest are storage types of quantized checkpoints and
// caches (int8/uint8/int32 packing, int64 shapes, FP8 E4M3): they never reach a float
// kernel; the loaders that read them decode them into quantized weights.
enum class DType : uint8_t { kF32, kF16, kBF16, kF8E4M3, kI8, kU8, kI32, kI64 };

// Bytes per element.
constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kI64:
      return 8;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF8E4M3:
    case DType::kI8:
    case DType::kU8:
      return 1;
  }
  return 1;
}

// Whether `t` is one of the float element types (F32, F16, BF16).
constexpr bool IsFloatDType(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

// The safetensors spelling ("F32", "F16", "BF16", "F8_E4M3", "I8", "U8", "I32", "I64").
std::string_view DTypeName(DType t);

inline float Bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round-to-nearest-even; NaN stays NaN.
inline uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);

// FP8 E4M3 as OCP / NVIDIA define it ("E4M3FN": bias 7, no infinities, the
// only NaNs 0x7F and 0xFF, largest finite 448, subnormals m * 2^-9).
// E4M3ToFloat is exact for every code (NaN codes give a quiet NaN).
// FloatToE4M3 rounds to nearest, ties to even, saturates finite values and
// infinities beyond 448 to +-448 (what quantizers do: a scale chosen from
// max|w| never produces them, and a NaN code in a weight would poison every
// dot product it enters), keeps the sign of zero and maps NaN to 0x7F.
float E4M3ToFloat(uint8_t code);
uint8_t FloatToE4M3(float f);
inline constexpr float kE4M3Max = 448.0f;

}  // namespace tandem
