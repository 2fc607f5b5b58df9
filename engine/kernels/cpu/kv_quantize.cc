// Int8 and fp8 (E4M3) quantization of KV rows; rules in kv_quantize.h.
#include "engine/kernels/cpu/kv_quantize.h"

#include <cmath>

#include "engine/model/dtype.h"

namespace tandem::kernels::cpu {

void QuantizeKvRowInt8(const float* x, int64_t n, int8_t* codes, float* scale) {
  float max_abs = 0.0f;
  for (int64_t i = 0; i < n; ++i) max_abs = std::fmax(max_abs, std::fabs(x[i]));
  const float s = max_abs / 127.0f;
  *scale = s;
  for (int64_t i = 0; i < n; ++i) {
    if (s == 0.0f) {
      codes[i] = 0;
      continue;
    }
    // rint: nearest, ties to even (the default rounding mode). |x| <= max
    // keeps the quotient within [-127, 127] up to the division's rounding;
    // the clamp makes that (and inf / NaN rows) safe to convert.
    const float r = std::nearbyint(x[i] / s);
    codes[i] = static_cast<int8_t>(r >= 127.0f ? 127 : r <= -127.0f ? -127 : r == r ? static_cast<int>(r) : 0);
  }
}

void QuantizeKvRowFp8(const float* x, int64_t n, float scale, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) codes[i] = FloatToE4M3(x[i] / scale);
}

}  // namespace tandem::kernels::cpu
