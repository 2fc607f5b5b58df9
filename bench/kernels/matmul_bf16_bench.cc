// MatMulBf16's two non-AMX paths side by side with fp32 MatMul, on BF16
// weights at SmolLM2-135M's and TinyLlama-1.1B's MLP shapes, M = 1, 4, 16, 128:
//  - fp32:     kernels::MatMul (weights widened to fp32, one fma a product);
//  - fallback: MatMulBf16 capped at avx512 (x rounded to BF16, then MatMul);
//  - dot:      the vdpbf16ps kernel (cpu::MatMulAvx512Bf16), called directly
//              since MatMulBf16 takes it only where it is the faster path
//              (label: the measured vdpbf16ps / fp32 fma multiply-add rate).
// All three give the same bits (dot and fallback) or differ only by x's
// rounding (fp32), so this is a speed comparison only. Up to M = 16 the
// weights rotate through a 1 GiB pool of copies (decode streams them from
// memory); at M = 128 one copy stays cache-warm as in prefill.
// Registered only where the CPU has AVX512_BF16.
// Thread-safety: benchmark bodies run on the benchmark thread; the kernels
// use the OpenMP team.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/bench_shapes.h"
#include "engine/kernels/cpu/matmul_kernels.h"
#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"

namespace tandem::bench {
namespace {

constexpr int64_t kPoolBytes = int64_t{1} << 30;

const uint16_t* Bf16Pool() {
  static uint16_t* pool = [] {
    auto* p = static_cast<uint16_t*>(std::aligned_alloc(64, kPoolBytes));
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 0.02f);
    uint16_t pattern[2048];
    for (uint16_t& v : pattern) v = FloatToBf16(dist(rng));
    const int64_t n = kPoolBytes / 2;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = pattern[(i * 7 + i / 2048) % 2048];
    return p;
  }();
  return pool;
}

enum class Path { kF32, kFallback, kDot };

void BM_MatMulBf16Paths(benchmark::State& state, MatShape shape, Path path) {
  const int64_t m = state.range(0);
  const kernels::CpuIsa isa = path == Path::kFallback ? kernels::CpuIsa::kAvx512 : kernels::CpuIsa::kAvx512Bf16;
  kernels::SetCpuIsa(isa);
  const int64_t elems = shape.n * shape.k;
  const int64_t copies = m <= 16 ? std::max<int64_t>(1, kPoolBytes / (elems * 2)) : 1;
  const uint16_t* pool = Bf16Pool();
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(m * shape.k), y(m * shape.n);
  for (float& f : x) f = dist(rng);
  int64_t i = 0;
  for (auto _ : state) {
    const kernels::WeightRef w{DType::kBF16, pool + (i++ % copies) * elems, shape.n, shape.k, shape.k};
    if (path == Path::kF32) {
      kernels::MatMul(x.data(), m, w, nullptr, y.data());
    } else if (path == Path::kDot) {
      const kernels::cpu::MatMulArgs args{x.data(), m, static_cast<int>(DType::kBF16), w.data, w.rows, w.cols,
                                          w.cols, nullptr, y.data()};
      kernels::cpu::MatMulAvx512Bf16(args);
    } else {
      kernels::MatMulBf16(x.data(), m, w, nullptr, y.data());
    }
    benchmark::DoNotOptimize(y.data());
  }
  kernels::SetCpuIsa(kernels::CpuIsa::kAmx);
  const double flops = 2.0 * m * shape.n * shape.k * state.iterations();
  state.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.SetBytesProcessed(elems * 2 * state.iterations());
  if (path == Path::kDot) {
    static const double ratio = kernels::cpu::Bf16DotMacRateOverFma();
    state.SetLabel("dot/fma mac rate " + std::to_string(ratio));
  }
}

const bool kRegistered = [] {
  if (kernels::DetectedCpuIsa() < kernels::CpuIsa::kAvx512Bf16) return false;
  const MatShape shapes[] = {kSmolLm2MatShapes[2], kSmolLm2MatShapes[3], kTinyLlamaMatShapes[0],
                             kTinyLlamaMatShapes[1]};
  for (const MatShape& s : shapes) {
    for (Path p : {Path::kF32, Path::kFallback, Path::kDot}) {
      const char* tag = p == Path::kF32 ? "fp32" : p == Path::kFallback ? "fallback" : "dot";
      benchmark::RegisterBenchmark(("BM_MatMulBf16Paths/" + std::string(s.name) + "/" + tag).c_str(),
                                   BM_MatMulBf16Paths, s, p)
          ->Arg(1)->Arg(4)->Arg(16)->Arg(128)->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace tandem::bench
