// tandem_kernel_bench's main: Google Benchmark's, plus the ISA in use and the
// machine limits (best of three, measured before any benchmark runs) in the
// run's context, so every figure is printed beside the limit it is judged by.
// TANDEM_CPU_ISA=avx2 (etc.) caps the kernels' ISA as it does in the engine.
// Thread-safety: main thread only.
#include <benchmark/benchmark.h>

#include <string>

#include "bench/kernels/machine_limits.h"
#include "engine/kernels/ops.h"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  using tandem::kernels::CpuIsaName;
  benchmark::AddCustomContext("tandem_cpu_isa", std::string(CpuIsaName(tandem::kernels::ActiveCpuIsa())));
  benchmark::AddCustomContext("tandem_cpu_isa_detected",
                              std::string(CpuIsaName(tandem::kernels::DetectedCpuIsa())));
  const tandem::bench::MachineLimits& l = tandem::bench::Limits();
  benchmark::AddCustomContext("limit_read_GB_per_s", std::to_string(l.read_bytes_per_s / 1e9));
  benchmark::AddCustomContext("limit_fp32_fma_GFLOPS", std::to_string(l.fp32_flops_per_s / 1e9));
  benchmark::AddCustomContext("limit_bf16_dot_GFLOPS", std::to_string(l.bf16_dot_flops_per_s / 1e9));
  benchmark::AddCustomContext("limit_amx_bf16_GFLOPS", std::to_string(l.amx_bf16_flops_per_s / 1e9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
