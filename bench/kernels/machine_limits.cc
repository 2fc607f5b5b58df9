// Measures the machine's limits (see machine_limits.h). The loops that need
// AVX-512 / AVX512_BF16 / AMX carry target attributes; each measurement checks
// the CPU first (kernels::DetectedCpuIsa, which also asks Linux for AMX
// permission), so the binary still runs where a unit is missing.
//
// Why each loop looks the way it does:
//  - Bandwidth: every thread sums its own contiguous slice with four
//    independent accumulators, so the loads, not an add chain, are the limit.
//    The buffer is first touched by the thread that reads it (page placement),
//    and the sum is returned so the loop cannot be removed.
//  - FMA / dot peaks: 16 independent register chains per thread cover the
//    4-cycle latency on two FMA ports; no loads, so nothing but the units
//    bounds it.
//  - AMX: four accumulator tiles each take a 16x32 x 32x16 BF16 product per
//    instruction from two source tiles loaded once; the unit, not memory,
//    is the limit.
// Thread-safety: see the header.
#include "bench/kernels/machine_limits.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "engine/kernels/ops.h"

namespace tandem::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

volatile float g_sink;  // keeps results alive

constexpr int kChains = 16;
constexpr int64_t kPeakIters = 4'000'000;

// The per-thread loops, each compiled for its unit with a target attribute
// (not a file-wide -m flag, so no inline library code in this file is built
// for a unit the CPU may lack). Called only after the CPU check.

__attribute__((target("avx512f"))) float SumAvx512(const float* p, int64_t len) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < len; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

float SumAvx2(const float* p, int64_t len) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < len; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float total = 0;
  for (float l : lanes) total += l;
  return total;
}

__attribute__((target("avx512f"))) float FmaChainsAvx512(int64_t iters) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  float out = 0;
  for (int c = 0; c < kChains; ++c) out += _mm512_reduce_add_ps(acc[c]);
  return out;
}

float FmaChainsAvx2(int64_t iters) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(static_cast<float>(c));
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  }
  float lanes[8], out = 0;
  for (int c = 0; c < kChains; ++c) {
    _mm256_storeu_ps(lanes, acc[c]);
    out += lanes[0];
  }
  return out;
}

__attribute__((target("avx512f,avx512bf16"))) float DotBf16Chains(int64_t iters) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);  // 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3a83);  // ~0.001
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  float out = 0;
  for (int c = 0; c < kChains; ++c) out += _mm512_reduce_add_ps(acc[c]);
  return out;
}

// The 64-byte AMX tile configuration (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

__attribute__((target("amx-tile,amx-bf16"))) float AmxChains(int64_t iters) {
  TileConfig cfg;
  for (int t = 0; t < 6; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;  // 16 fp32 accumulators or 32 bf16 per row
  }
  _tile_loadconfig(&cfg);
  alignas(64) uint16_t src[16 * 32];
  for (auto& v : src) v = 0x3c00;  // small bf16 values
  alignas(64) float dst[16 * 16] = {};
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, src, 64);
  _tile_loadd(5, src, 64);
  for (int64_t i = 0; i < iters; ++i) {
    _tile_dpbf16ps(0, 4, 5);
    _tile_dpbf16ps(1, 4, 5);
    _tile_dpbf16ps(2, 4, 5);
    _tile_dpbf16ps(3, 4, 5);
  }
  _tile_stored(0, dst, 64);
  _tile_release();
  return dst[0];
}

}  // namespace


double MeasureReadBandwidth(int64_t buffer_bytes) {
  const int64_t n = buffer_bytes / sizeof(float) / 64 * 64;
  auto* buf = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) buf[i] = 1.0f;
  const bool avx512 = kernels::DetectedCpuIsa() >= kernels::CpuIsa::kAvx512;
  float total = 0;
  const auto t0 = Clock::now();
#pragma omp parallel reduction(+ : total)
  {
    const int nt = omp_get_num_threads();
    const int t = omp_get_thread_num();
    const int64_t per = n / nt / 64 * 64;
    const int64_t len = t == nt - 1 ? n - t * per : per;
    total += avx512 ? SumAvx512(buf + t * per, len) : SumAvx2(buf + t * per, len);
  }
  const double s = Seconds(t0, Clock::now());
  g_sink = total;
  std::free(buf);
  return static_cast<double>(n) * sizeof(float) / s;
}

double MeasureFp32FmaPeak() {
  const bool avx512 = kernels::DetectedCpuIsa() >= kernels::CpuIsa::kAvx512;
  int threads = 1;
  const auto t0 = Clock::now();
#pragma omp parallel
  {
#pragma omp single
    threads = omp_get_num_threads();
    g_sink = avx512 ? FmaChainsAvx512(kPeakIters) : FmaChainsAvx2(kPeakIters);
  }
  const double s = Seconds(t0, Clock::now());
  const double lanes = avx512 ? 16 : 8;
  return 2.0 * lanes * kChains * kPeakIters * threads / s;
}

double MeasureBf16DotPeak() {
  if (kernels::DetectedCpuIsa() < kernels::CpuIsa::kAvx512Bf16) return 0;
  int threads = 1;
  const auto t0 = Clock::now();
#pragma omp parallel
  {
#pragma omp single
    threads = omp_get_num_threads();
    g_sink = DotBf16Chains(kPeakIters);
  }
  const double s = Seconds(t0, Clock::now());
  // Each vdpbf16ps: 16 lanes x 2 products, each a multiply and an add.
  return 2.0 * 32 * kChains * kPeakIters * threads / s;
}

double MeasureAmxBf16Peak() {
  if (kernels::DetectedCpuIsa() < kernels::CpuIsa::kAmx) return 0;
  constexpr int64_t kIters = 1'000'000;
  int threads = 1;
  const auto t0 = Clock::now();
#pragma omp parallel
  {
#pragma omp single
    threads = omp_get_num_threads();
    g_sink = AmxChains(kIters);
  }
  const double s = Seconds(t0, Clock::now());
  // Each tdpbf16ps: 16 x 16 outputs x 32 products, each a multiply and an add.
  return 2.0 * 16 * 16 * 32 * 4 * kIters * threads / s;
}

const MachineLimits& Limits() {
  static const MachineLimits limits = [] {
    MachineLimits m;
    for (int i = 0; i < 3; ++i) {
      m.read_bytes_per_s = std::max(m.read_bytes_per_s, MeasureReadBandwidth(int64_t{1} << 30));
      m.fp32_flops_per_s = std::max(m.fp32_flops_per_s, MeasureFp32FmaPeak());
      m.bf16_dot_flops_per_s = std::max(m.bf16_dot_flops_per_s, MeasureBf16DotPeak());
      m.amx_bf16_flops_per_s = std::max(m.amx_bf16_flops_per_s, MeasureAmxBf16Peak());
    }
    return m;
  }();
  return limits;
}

}  // namespace tandem::bench
