// W8A8 int8 matmul benchmarks (kernels::MatMulInt8, `--quantization int8`) at
// SmolLM2-135M's shapes, beside matmul_bench.cc's fp32 and BF16 entries:
// decode (M = 1, 4, 16) and prefill (M = 128, 256). The label names the
// int8 path (avx512_vnni or avx2).
//
//  - Decode streams the int8 weights (n x padded k bytes, a quarter of the
//    fp32 and half of the BF16 bytes): copies of the quantized matrix rotate
//    through ~1 GiB so each iteration reads from memory. `frac_of_bw` as in
//    matmul_bench.cc, over the int8 bytes.
//  - Prefill: `GOPS` counts 2*M*N*K integer ops per second (the activation
//    quantization and the rescale included in the time).
// Thread-safety: benchmark bodies run on the benchmark thread; MatMulInt8
// uses the OpenMP team.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/bench_shapes.h"
#include "bench/kernels/machine_limits.h"
#include "engine/kernels/int8_matmul.h"
#include "engine/kernels/ops.h"

namespace tandem::bench {
namespace {

constexpr int64_t kPoolBytes = int64_t{1} << 30;

std::vector<float> Random(int64_t n, float sigma, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

kernels::Int8Weight Quantized(const MatShape& s) {
  const std::vector<float> w = Random(s.n * s.k, 0.02f, 7);
  return kernels::QuantizeWeightInt8({DType::kF32, w.data(), s.n, s.k, s.k});
}

const char* PathName() {
  return kernels::ActiveInt8Path() == kernels::Int8Path::kAvx512Vnni ? "avx512_vnni" : "avx2";
}

void BM_MatMulInt8Decode(benchmark::State& state, MatShape shape) {
  const int64_t m = state.range(0);
  const kernels::Int8Weight one = Quantized(shape);
  const int64_t bytes = static_cast<int64_t>(one.data.size());
  std::vector<kernels::Int8Weight> copies(static_cast<size_t>(std::max<int64_t>(1, kPoolBytes / bytes)), one);
  const std::vector<float> x = Random(m * shape.k, 1.0f, 3);
  std::vector<float> y(m * shape.n);
  size_t i = 0;
  for (auto _ : state) {
    kernels::MatMulInt8(x.data(), m, copies[i++ % copies.size()], nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double total = static_cast<double>(bytes) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(total));
  state.counters["frac_of_bw"] = benchmark::Counter(total / Limits().read_bytes_per_s, benchmark::Counter::kIsRate);
  state.SetLabel(PathName());
}

void BM_MatMulInt8Prefill(benchmark::State& state, MatShape shape) {
  const int64_t m = state.range(0);
  const kernels::Int8Weight w = Quantized(shape);
  const std::vector<float> x = Random(m * shape.k, 1.0f, 3);
  std::vector<float> y(m * shape.n);
  for (auto _ : state) {
    kernels::MatMulInt8(x.data(), m, w, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double ops = 2.0 * m * shape.n * shape.k * state.iterations();
  state.counters["GOPS"] = benchmark::Counter(ops / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(PathName());
}

const bool kRegistered = [] {
  for (const MatShape& s : kSmolLm2MatShapes) {
    benchmark::RegisterBenchmark(("BM_MatMulInt8Decode/" + std::string(s.name)).c_str(), BM_MatMulInt8Decode, s)
        ->Arg(1)->Arg(4)->Arg(16)->UseRealTime();
    benchmark::RegisterBenchmark(("BM_MatMulInt8Prefill/" + std::string(s.name)).c_str(), BM_MatMulInt8Prefill, s)
        ->Arg(128)->Arg(256)->UseRealTime();
  }
  return true;
}();

}  // namespace
}  // namespace tandem::bench
