// MatMul benchmarks at SmolLM2-135M's shapes with BF16 weights, in both
// precisions the engine has: fp32 (kernels::MatMul, `--dtype float32`) and
// BF16 (kernels::MatMulBf16, `--dtype bfloat16`: AMX tiles where the CPU has
// them): decode (M = 1, 4, 16) and prefill (M = 128, 256), each against the limit
// that bounds it.
//
//  - Decode reads every weight once per step, so it is bandwidth-bound:
//    `frac_of_bw` = weight bytes / s over the measured read bandwidth. The
//    weights rotate through a 1 GiB pool of copies (larger than the L3) so
//    each iteration streams from memory, as a whole-model step does.
//  - Prefill reuses each weight M times, so it is compute-bound:
//    `frac_of_peak` = 2*M*N*K flops / s over the measured peak of the
//    instructions the kernel runs: fp32 FMA for MatMul; AMX tdpbf16ps for
//    MatMulBf16 on an AMX CPU (else the fp32 FMA peak, which its fallback uses).
// Thread-safety: benchmark bodies run on the benchmark thread; MatMul uses
// the OpenMP team.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/bench_shapes.h"
#include "bench/kernels/machine_limits.h"
#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"

namespace tandem::bench {
namespace {

constexpr int64_t kPoolBytes = int64_t{1} << 30;

// 1 GiB of BF16 values (a random 4 KiB pattern repeated: the values do not
// matter for speed, the bytes moved do).
const uint16_t* WeightPool() {
  static uint16_t* pool = [] {
    auto* p = static_cast<uint16_t*>(std::aligned_alloc(64, kPoolBytes));
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 0.02f);
    uint16_t pattern[2048];
    for (uint16_t& v : pattern) v = FloatToBf16(dist(rng));
    const int64_t n = kPoolBytes / 2;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = pattern[i % 2048];
    return p;
  }();
  return pool;
}

std::vector<float> RandomActivations(int64_t n) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// kBf16Packed: MatMulBf16 with the weights in the AMX kernel's packed layout
// (what a model loaded with --dtype bfloat16 on an AMX CPU runs).
enum class Precision { kF32, kBf16, kBf16Packed };

void Multiply(Precision p, const float* x, int64_t m, const kernels::WeightRef& w, float* y) {
  if (p != Precision::kF32) {
    kernels::MatMulBf16(x, m, w, nullptr, y);
  } else {
    kernels::MatMul(x, m, w, nullptr, y);
  }
}

double PeakFor(Precision p) {
  if (p != Precision::kF32 && kernels::ActiveCpuIsa() == kernels::CpuIsa::kAmx) return Limits().amx_bf16_flops_per_s;
  return Limits().fp32_flops_per_s;
}

void BM_MatMulDecode(benchmark::State& state, MatShape shape, Precision p) {
  const int64_t m = state.range(0);
  // Packed copies are read as packed tiles straight from the pool (the
  // values do not matter for speed), so they take their packed size.
  const int64_t elems = p == Precision::kBf16Packed ? kernels::AmxPackedElems(shape.n, shape.k) : shape.n * shape.k;
  const int64_t bytes = shape.n * shape.k * 2;
  const int64_t copies = std::max<int64_t>(1, kPoolBytes / (elems * 2));
  const uint16_t* pool = WeightPool();
  const std::vector<float> x = RandomActivations(m * shape.k);
  std::vector<float> y(m * shape.n);
  int64_t i = 0;
  for (auto _ : state) {
    kernels::WeightRef w{DType::kBF16, pool + (i++ % copies) * elems, shape.n, shape.k, shape.k};
    if (p == Precision::kBf16Packed) w.amx_tiles = static_cast<const uint16_t*>(w.data);
    Multiply(p, x.data(), m, w, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double total = static_cast<double>(bytes) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(total));
  state.counters["frac_of_bw"] = benchmark::Counter(total / Limits().read_bytes_per_s, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(kernels::CpuIsaName(kernels::ActiveCpuIsa())));
}

void BM_MatMulPrefill(benchmark::State& state, MatShape shape, Precision p) {
  const int64_t m = state.range(0);
  std::vector<uint16_t> wbits(shape.n * shape.k);
  const uint16_t* pool = WeightPool();
  std::copy_n(pool, wbits.size(), wbits.data());
  kernels::WeightRef w{DType::kBF16, wbits.data(), shape.n, shape.k, shape.k};
  std::vector<uint16_t> packed;
  if (p == Precision::kBf16Packed) {
    packed.resize(static_cast<size_t>(kernels::AmxPackedElems(shape.n, shape.k)));
    kernels::PackBf16ForAmx(w, packed.data());
    w.amx_tiles = packed.data();
  }
  const std::vector<float> x = RandomActivations(m * shape.k);
  std::vector<float> y(m * shape.n);
  for (auto _ : state) {
    Multiply(p, x.data(), m, w, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * m * shape.n * shape.k * state.iterations();
  state.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_of_peak"] = benchmark::Counter(flops / PeakFor(p), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(kernels::CpuIsaName(kernels::ActiveCpuIsa())));
}

const bool kRegistered = [] {
  for (const MatShape& s : kSmolLm2MatShapes) {
    for (Precision p : {Precision::kF32, Precision::kBf16, Precision::kBf16Packed}) {
      const std::string tag = p == Precision::kBf16 ? "Bf16" : p == Precision::kBf16Packed ? "Bf16Packed" : "";
      benchmark::RegisterBenchmark(("BM_MatMul" + tag + "Decode/" + std::string(s.name)).c_str(), BM_MatMulDecode, s,
                                   p)
          ->Arg(1)->Arg(4)->Arg(16)->UseRealTime();
      benchmark::RegisterBenchmark(("BM_MatMul" + tag + "Prefill/" + std::string(s.name)).c_str(), BM_MatMulPrefill,
                                   s, p)
          ->Arg(128)->Arg(256)->UseRealTime();
    }
  }
  return true;
}();

}  // namespace
}  // namespace tandem::bench
