// RmsNorm, ApplyRope and SiluMul at SmolLM2-135M's widths, for one token
// (decode) and 256 (prefill). These are memory/latency-bound and small next
// to the matmuls; the figures show when they stop being small.
// Thread-safety: benchmark thread only; the ops use the OpenMP team.
#include <benchmark/benchmark.h>

#include <vector>

#include "bench/kernels/bench_shapes.h"
#include "engine/kernels/ops.h"

namespace tandem::bench {
namespace {

void BM_RmsNorm(benchmark::State& state) {
  const int64_t m = state.range(0), d = kSmolHidden;
  std::vector<float> x(m * d, 0.5f), out(m * d), w(d, 1.0f);
  const kernels::WeightRef wr{DType::kF32, w.data(), 1, d, d};
  for (auto _ : state) {
    kernels::RmsNorm(x.data(), m, d, wr, 1e-5, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * m * d * 8);
}
BENCHMARK(BM_RmsNorm)->Arg(1)->Arg(256);

void BM_ApplyRope(benchmark::State& state) {
  const int64_t m = state.range(0), stride = kSmolHeads * kSmolHeadDim;
  std::vector<float> x(m * stride, 0.5f), cos(m * kSmolHeadDim / 2, 0.6f), sin(m * kSmolHeadDim / 2, 0.8f);
  for (auto _ : state) {
    kernels::ApplyRope(x.data(), m, stride, kSmolHeads, kSmolHeadDim, cos.data(), sin.data());
    benchmark::DoNotOptimize(x.data());
  }
  state.SetBytesProcessed(state.iterations() * m * stride * 8);
}
BENCHMARK(BM_ApplyRope)->Arg(1)->Arg(256);

void BM_SiluMul(benchmark::State& state) {
  const int64_t m = state.range(0), d = kSmolFfn;
  std::vector<float> g(m * d, 0.5f), u(m * d, 0.25f), out(m * d);
  for (auto _ : state) {
    kernels::SiluMul(g.data(), u.data(), m, d, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * m * d * 12);
}
BENCHMARK(BM_SiluMul)->Arg(1)->Arg(256);

}  // namespace
}  // namespace tandem::bench
