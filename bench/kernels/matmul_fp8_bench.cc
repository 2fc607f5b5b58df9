// FP8 W8A16 matmul benchmarks (kernels::MatMulFp8, `--quantization fp8`) at
// SmolLM2-135M's shapes and two TinyLlama-1.1B MLP shapes (hidden 2048, FFN
// 5632), with the baselines at the TinyLlama shapes registered here under
// matmul_bench.cc's and matmul_int8_bench.cc's names (fp32 MatMul over BF16
// weights, `--dtype float32` on a BF16 checkpoint; int8 W8A8), so one
// filter (e.g. 'Decode/tinyllama') interleaves all three. The label names
// the path.
//
//  - Decode streams the weights (1 byte per weight for fp8 and int8, 2 for
//    BF16): copies rotate through a pool larger than the L3 so each
//    iteration reads from memory. `frac_of_bw` as in matmul_bench.cc, over
//    the bytes of the scheme's own weights.
//  - Prefill: `GFLOPS` counts 2*M*N*K per second.
// Thread-safety: benchmark bodies run on the benchmark thread; the kernels
// use the OpenMP team.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/bench_shapes.h"
#include "bench/kernels/machine_limits.h"
#include "engine/kernels/fp8_matmul.h"
#include "engine/kernels/int8_matmul.h"
#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"

namespace tandem::bench {
namespace {

constexpr int64_t kPoolBytes = int64_t{1} << 30;

// TinyLlama-1.1B's gate/up and down projections (the bandwidth-bound bulk
// of its decode step).
constexpr MatShape kTinyLlamaShapes[] = {
    {"tinyllama_gate_up_2048x5632", 5632, 2048},
    {"tinyllama_down_5632x2048", 2048, 5632},
};

std::vector<float> Random(int64_t n, float sigma, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

kernels::WeightRef F32Ref(const std::vector<float>& w, const MatShape& s) {
  return {DType::kF32, w.data(), s.n, s.k, s.k};
}

template <typename Weight>
std::vector<Weight> Copies(const Weight& one, int64_t bytes) {
  return std::vector<Weight>(static_cast<size_t>(std::max<int64_t>(1, kPoolBytes / bytes)), one);
}

void ReportDecode(benchmark::State& state, int64_t bytes, const char* label) {
  const double total = static_cast<double>(bytes) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(total));
  state.counters["frac_of_bw"] = benchmark::Counter(total / Limits().read_bytes_per_s, benchmark::Counter::kIsRate);
  state.SetLabel(label);
}

void ReportPrefill(benchmark::State& state, int64_t m, const MatShape& s, const char* label) {
  const double flops = 2.0 * m * s.n * s.k * state.iterations();
  state.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(label);
}

const char* Fp8PathName() { return kernels::ActiveFp8Path() == kernels::Fp8Path::kAvx512 ? "avx512" : "avx2"; }
const char* Int8PathName() {
  return kernels::ActiveInt8Path() == kernels::Int8Path::kAvx512Vnni ? "avx512_vnni" : "avx2";
}

void BM_MatMulFp8Decode(benchmark::State& state, MatShape s) {
  const int64_t m = state.range(0);
  const kernels::Fp8Weight one = kernels::QuantizeWeightFp8(F32Ref(Random(s.n * s.k, 0.02f, 7), s));
  const auto bytes = static_cast<int64_t>(one.codes.size());
  const std::vector<kernels::Fp8Weight> copies = Copies(one, bytes);
  const std::vector<float> x = Random(m * s.k, 1.0f, 3);
  std::vector<float> y(m * s.n);
  size_t i = 0;
  for (auto _ : state) {
    kernels::MatMulFp8(x.data(), m, copies[i++ % copies.size()], nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  ReportDecode(state, bytes, Fp8PathName());
}

void BM_MatMulFp8Prefill(benchmark::State& state, MatShape s) {
  const int64_t m = state.range(0);
  const kernels::Fp8Weight w = kernels::QuantizeWeightFp8(F32Ref(Random(s.n * s.k, 0.02f, 7), s));
  const std::vector<float> x = Random(m * s.k, 1.0f, 3);
  std::vector<float> y(m * s.n);
  for (auto _ : state) {
    kernels::MatMulFp8(x.data(), m, w, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  ReportPrefill(state, m, s, Fp8PathName());
}

// The baselines at the TinyLlama shapes.
void BM_MatMulBf16WeightsDecode(benchmark::State& state, MatShape s) {
  const int64_t m = state.range(0);
  const std::vector<float> w = Random(s.n * s.k, 0.02f, 7);
  const int64_t elems = s.n * s.k;
  const int64_t copies = std::max<int64_t>(1, kPoolBytes / (elems * 2));
  std::vector<uint16_t> pool(static_cast<size_t>(copies * elems));
  for (int64_t c = 0; c < copies; ++c) {
    for (int64_t e = 0; e < elems; ++e) pool[c * elems + e] = FloatToBf16(w[e]);
  }
  const std::vector<float> x = Random(m * s.k, 1.0f, 3);
  std::vector<float> y(m * s.n);
  int64_t i = 0;
  for (auto _ : state) {
    const kernels::WeightRef ref{DType::kBF16, pool.data() + (i++ % copies) * elems, s.n, s.k, s.k};
    kernels::MatMul(x.data(), m, ref, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  ReportDecode(state, elems * 2, std::string(kernels::CpuIsaName(kernels::ActiveCpuIsa())).c_str());
}

void BM_MatMulBf16WeightsPrefill(benchmark::State& state, MatShape s) {
  const int64_t m = state.range(0);
  const std::vector<float> w = Random(s.n * s.k, 0.02f, 7);
  std::vector<uint16_t> bits(w.size());
  for (size_t e = 0; e < w.size(); ++e) bits[e] = FloatToBf16(w[e]);
  const kernels::WeightRef ref{DType::kBF16, bits.data(), s.n, s.k, s.k};
  const std::vector<float> x = Random(m * s.k, 1.0f, 3);
  std::vector<float> y(m * s.n);
  for (auto _ : state) {
    kernels::MatMul(x.data(), m, ref, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  ReportPrefill(state, m, s, std::string(kernels::CpuIsaName(kernels::ActiveCpuIsa())).c_str());
}

void BM_MatMulInt8Decode(benchmark::State& state, MatShape s) {
  const int64_t m = state.range(0);
  const kernels::Int8Weight one = kernels::QuantizeWeightInt8(F32Ref(Random(s.n * s.k, 0.02f, 7), s));
  const auto bytes = static_cast<int64_t>(one.data.size());
  const std::vector<kernels::Int8Weight> copies = Copies(one, bytes);
  const std::vector<float> x = Random(m * s.k, 1.0f, 3);
  std::vector<float> y(m * s.n);
  size_t i = 0;
  for (auto _ : state) {
    kernels::MatMulInt8(x.data(), m, copies[i++ % copies.size()], nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  ReportDecode(state, bytes, Int8PathName());
}

void BM_MatMulInt8Prefill(benchmark::State& state, MatShape s) {
  const int64_t m = state.range(0);
  const kernels::Int8Weight w = kernels::QuantizeWeightInt8(F32Ref(Random(s.n * s.k, 0.02f, 7), s));
  const std::vector<float> x = Random(m * s.k, 1.0f, 3);
  std::vector<float> y(m * s.n);
  for (auto _ : state) {
    kernels::MatMulInt8(x.data(), m, w, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  ReportPrefill(state, m, s, Int8PathName());
}

void RegisterFp8(const MatShape& s) {
  benchmark::RegisterBenchmark(("BM_MatMulFp8Decode/" + std::string(s.name)).c_str(), BM_MatMulFp8Decode, s)
      ->Arg(1)->Arg(4)->UseRealTime();
  benchmark::RegisterBenchmark(("BM_MatMulFp8Prefill/" + std::string(s.name)).c_str(), BM_MatMulFp8Prefill, s)
      ->Arg(128)->UseRealTime();
}

const bool kRegistered = [] {
  for (const MatShape& s : kSmolLm2MatShapes) RegisterFp8(s);
  for (const MatShape& s : kTinyLlamaShapes) {
    RegisterFp8(s);
    // matmul_bench.cc names fp32 MatMul over BF16 weights BM_MatMul{Decode,Prefill}.
    benchmark::RegisterBenchmark(("BM_MatMulDecode/" + std::string(s.name)).c_str(), BM_MatMulBf16WeightsDecode, s)
        ->Arg(1)->Arg(4)->UseRealTime();
    benchmark::RegisterBenchmark(("BM_MatMulPrefill/" + std::string(s.name)).c_str(), BM_MatMulBf16WeightsPrefill, s)
        ->Arg(128)->UseRealTime();
    benchmark::RegisterBenchmark(("BM_MatMulInt8Decode/" + std::string(s.name)).c_str(), BM_MatMulInt8Decode, s)
        ->Arg(1)->Arg(4)->UseRealTime();
    benchmark::RegisterBenchmark(("BM_MatMulInt8Prefill/" + std::string(s.name)).c_str(), BM_MatMulInt8Prefill, s)
        ->Arg(128)->UseRealTime();
  }
  return true;
}();

}  // namespace
}  // namespace tandem::bench
