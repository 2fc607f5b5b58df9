// The machine's limits as benchmarks of their own (one measurement per
// iteration; run with --benchmark_repetitions to see the spread): read
// bandwidth over 1 GiB, fp32 FMA peak, vdpbf16ps peak, AMX BF16 peak.
// Thread-safety: benchmark thread only; the measurements use the OpenMP team.
#include <benchmark/benchmark.h>

#include "bench/kernels/machine_limits.h"

namespace tandem::bench {
namespace {

void BM_LimitReadBandwidth(benchmark::State& state) {
  double v = 0;
  for (auto _ : state) v = MeasureReadBandwidth(int64_t{1} << 30);
  state.counters["GB_per_s"] = v / 1e9;
}
BENCHMARK(BM_LimitReadBandwidth)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_LimitFp32FmaPeak(benchmark::State& state) {
  double v = 0;
  for (auto _ : state) v = MeasureFp32FmaPeak();
  state.counters["GFLOPS"] = v / 1e9;
}
BENCHMARK(BM_LimitFp32FmaPeak)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_LimitBf16DotPeak(benchmark::State& state) {
  double v = 0;
  for (auto _ : state) v = MeasureBf16DotPeak();
  state.counters["GFLOPS"] = v / 1e9;
}
BENCHMARK(BM_LimitBf16DotPeak)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_LimitAmxBf16Peak(benchmark::State& state) {
  double v = 0;
  for (auto _ : state) v = MeasureAmxBf16Peak();
  state.counters["GFLOPS"] = v / 1e9;
}
BENCHMARK(BM_LimitAmxBf16Peak)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tandem::bench
