// The machine's limits, measured in-process so each kernel benchmark can
// report its achieved fraction of the limit that bounds it:
//   - memory read bandwidth (all OpenMP threads streaming a buffer far larger
//     than the last-level cache, AVX-512 or AVX2 loads),
//   - fp32 FMA peak (register-only FMA chains on all threads),
//   - BF16 dot-product peak (vdpbf16ps, where the CPU has AVX512_BF16),
//   - AMX BF16 peak (tdpbf16ps, where the CPU has AMX).
// A peak of 0 means the CPU lacks that unit.
// Thread-safety: Limits() measures once (function-local static) and is safe
// to call from any thread; the Measure* functions use all OpenMP threads.
#pragma once

#include <cstdint>

namespace tandem::bench {

struct MachineLimits {
  double read_bytes_per_s = 0;
  double fp32_flops_per_s = 0;
  double bf16_dot_flops_per_s = 0;  // vdpbf16ps
  double amx_bf16_flops_per_s = 0;  // tdpbf16ps
};

// Best of a few runs of each measurement below (first call takes ~2 s).
const MachineLimits& Limits();

// One run each; they return bytes/s or flops/s (0 when the unit is absent).
double MeasureReadBandwidth(int64_t buffer_bytes);
double MeasureFp32FmaPeak();
double MeasureBf16DotPeak();
double MeasureAmxBf16Peak();

}  // namespace tandem::bench
