// W4A16 int4 matmul benchmarks (kernels::MatMulInt4, `--quantization int4`):
//  - BM_MatMulInt4Decode / BM_MatMulInt4Prefill at SmolLM2-135M's shapes,
//    beside matmul_bench.cc's and matmul_int8_bench.cc's entries (decode
//    M = 1, 4, 16; prefill M = 128, 256);
//  - BM_TinyLlamaDecode/<scheme>/<shape>/M and BM_TinyLlamaPrefill/... at
//    TinyLlama-1.1B's MLP shapes for int4, int8 W8A8 and fp32 over BF16
//    weights (kernels::MatMul, what the engine runs on a BF16 checkpoint),
//    registered here so the three share one binary run and one shape list.
//
// Decode streams the weights: copies rotate through ~1 GiB so each iteration
// reads from memory. `frac_of_bw` counts the scheme's own bytes (int4: the
// packed codes plus the fp32 scales and uint8 zeros). Prefill: `GFLOPS`
// counts 2*M*N*K per second. The label names the path.
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
#include "engine/kernels/int4_matmul.h"
#include "engine/kernels/int8_matmul.h"
#include "engine/kernels/ops.h"
#include "engine/model/dtype.h"

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

enum class Scheme { kInt4, kInt8, kBf16Weights };

const char* SchemeName(Scheme s) {
  switch (s) {
    case Scheme::kInt4:
      return "int4";
    case Scheme::kInt8:
      return "int8";
    case Scheme::kBf16Weights:
      return "bf16";
  }
  return "?";
}

// One quantized or BF16 matrix of `shape`; the values do not matter for
// speed, the bytes moved do.
struct Matrix {
  kernels::Int4Weight int4;
  kernels::Int8Weight int8;
  std::vector<uint16_t> bf16;

  int64_t Bytes(Scheme s) const {
    switch (s) {
      case Scheme::kInt4:
        return static_cast<int64_t>(int4.packed.size() + int4.scales.size() * 4 + int4.zeros.size());
      case Scheme::kInt8:
        return static_cast<int64_t>(int8.data.size() + int8.scales.size() * 4 + int8.row_sums.size() * 4);
      case Scheme::kBf16Weights:
        return static_cast<int64_t>(bf16.size() * 2);
    }
    return 0;
  }
};

Matrix Make(Scheme s, const MatShape& shape) {
  const std::vector<float> w = Random(shape.n * shape.k, 0.02f, 7);
  const kernels::WeightRef ref{DType::kF32, w.data(), shape.n, shape.k, shape.k};
  Matrix out;
  if (s == Scheme::kInt4) out.int4 = kernels::QuantizeWeightInt4(ref);
  if (s == Scheme::kInt8) out.int8 = kernels::QuantizeWeightInt8(ref);
  if (s == Scheme::kBf16Weights) {
    out.bf16.resize(w.size());
    for (size_t i = 0; i < w.size(); ++i) out.bf16[i] = FloatToBf16(w[i]);
  }
  return out;
}

void Multiply(Scheme s, const Matrix& w, const MatShape& shape, const float* x, int64_t m, float* y) {
  switch (s) {
    case Scheme::kInt4:
      return kernels::MatMulInt4(x, m, w.int4, nullptr, y);
    case Scheme::kInt8:
      return kernels::MatMulInt8(x, m, w.int8, nullptr, y);
    case Scheme::kBf16Weights:
      return kernels::MatMul(x, m, {DType::kBF16, w.bf16.data(), shape.n, shape.k, shape.k}, nullptr, y);
  }
}

std::string Label(Scheme s) {
  switch (s) {
    case Scheme::kInt4:
      return kernels::ActiveInt4Path() == kernels::Int4Path::kAvx512 ? "avx512" : "avx2";
    case Scheme::kInt8:
      return kernels::ActiveInt8Path() == kernels::Int8Path::kAvx512Vnni ? "avx512_vnni" : "avx2";
    case Scheme::kBf16Weights:
      return std::string(kernels::CpuIsaName(kernels::ActiveCpuIsa()));
  }
  return "?";
}

void BM_Decode(benchmark::State& state, MatShape shape, Scheme s) {
  const int64_t m = state.range(0);
  const Matrix one = Make(s, shape);
  const int64_t bytes = one.Bytes(s);
  std::vector<Matrix> copies(static_cast<size_t>(std::max<int64_t>(1, kPoolBytes / bytes)), one);
  const std::vector<float> x = Random(m * shape.k, 1.0f, 3);
  std::vector<float> y(m * shape.n);
  size_t i = 0;
  for (auto _ : state) {
    Multiply(s, copies[i++ % copies.size()], shape, x.data(), m, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double total = static_cast<double>(bytes) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(total));
  state.counters["frac_of_bw"] = benchmark::Counter(total / Limits().read_bytes_per_s, benchmark::Counter::kIsRate);
  state.SetLabel(Label(s));
}

void BM_Prefill(benchmark::State& state, MatShape shape, Scheme s) {
  const int64_t m = state.range(0);
  const Matrix w = Make(s, shape);
  const std::vector<float> x = Random(m * shape.k, 1.0f, 3);
  std::vector<float> y(m * shape.n);
  for (auto _ : state) {
    Multiply(s, w, shape, x.data(), m, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * m * shape.n * shape.k * state.iterations();
  state.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(Label(s));
}

const bool kRegistered = [] {
  for (const MatShape& s : kSmolLm2MatShapes) {
    benchmark::RegisterBenchmark(("BM_MatMulInt4Decode/" + std::string(s.name)).c_str(), BM_Decode, s, Scheme::kInt4)
        ->Arg(1)->Arg(4)->Arg(16)->UseRealTime();
    benchmark::RegisterBenchmark(("BM_MatMulInt4Prefill/" + std::string(s.name)).c_str(), BM_Prefill, s,
                                 Scheme::kInt4)
        ->Arg(128)->Arg(256)->UseRealTime();
  }
  for (const MatShape& s : kTinyLlamaMatShapes) {
    for (Scheme scheme : {Scheme::kInt4, Scheme::kInt8, Scheme::kBf16Weights}) {
      const std::string tag = std::string(SchemeName(scheme)) + "/" + s.name;
      benchmark::RegisterBenchmark(("BM_TinyLlamaDecode/" + tag).c_str(), BM_Decode, s, scheme)
          ->Arg(1)->UseRealTime();
      benchmark::RegisterBenchmark(("BM_TinyLlamaPrefill/" + tag).c_str(), BM_Prefill, s, scheme)
          ->Arg(128)->UseRealTime();
    }
  }
  return true;
}();

}  // namespace
}  // namespace tandem::bench
