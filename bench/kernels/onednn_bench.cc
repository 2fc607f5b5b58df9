// oneDNN's BF16 matmul (BF16 activations and weights, fp32 output) at the
// SmolLM2-135M prefill shapes, with the weights reordered once into the
// layout oneDNN asks for (as a loader would do). It shows what oneDNN's
// kernel (AMX where the CPU has it: see the label) gets against the BF16
// peak, `frac_of_peak` (AMX peak if present, else the vdpbf16ps peak): the
// yardstick for a BF16 compute path. Built only where oneDNN is installed.
// Thread-safety: benchmark thread only; oneDNN uses its own thread team.
#include <benchmark/benchmark.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <string>
#include <vector>

#include "bench/kernels/bench_shapes.h"
#include "bench/kernels/machine_limits.h"

namespace tandem::bench {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

void BM_OnednnMatMulBf16(benchmark::State& state, MatShape shape) {
  const int64_t m = state.range(0);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const dnnl::memory::desc src_md({m, shape.k}, dt::bf16, tag::ab);
  const dnnl::memory::desc dst_md({m, shape.n}, dt::f32, tag::ab);
  // W is stored [n][k] like a checkpoint: as a k x n matrix that is "ba".
  const dnnl::memory::desc plain_w_md({shape.k, shape.n}, dt::bf16, tag::ba);
  const dnnl::memory::desc any_w_md({shape.k, shape.n}, dt::bf16, tag::any);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, any_w_md, dst_md), eng);
  const dnnl::matmul prim(pd);

  std::vector<uint16_t> src(m * shape.k, 0x3c00), w(shape.n * shape.k, 0x3c00);
  std::vector<float> dst(m * shape.n);
  dnnl::memory src_m(src_md, eng, src.data());
  dnnl::memory plain_w(plain_w_md, eng, w.data());
  dnnl::memory dst_m(dst_md, eng, dst.data());
  dnnl::memory packed_w(pd.weights_desc(), eng);
  dnnl::reorder(plain_w, packed_w).execute(strm, plain_w, packed_w);
  strm.wait();

  for (auto _ : state) {
    prim.execute(strm, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, packed_w}, {DNNL_ARG_DST, dst_m}});
    strm.wait();
  }
  const double flops = 2.0 * m * shape.n * shape.k * state.iterations();
  const MachineLimits& l = Limits();
  const double peak = l.amx_bf16_flops_per_s > 0 ? l.amx_bf16_flops_per_s : l.bf16_dot_flops_per_s;
  state.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  if (peak > 0) state.counters["frac_of_peak"] = benchmark::Counter(flops / peak, benchmark::Counter::kIsRate);
  state.SetLabel(pd.impl_info_str());
}

const bool kRegistered = [] {
  for (const MatShape& s : kSmolLm2MatShapes) {
    benchmark::RegisterBenchmark(("BM_OnednnMatMulBf16/" + std::string(s.name)).c_str(), BM_OnednnMatMulBf16, s)
        ->Arg(1)->Arg(16)->Arg(256)->UseRealTime();
  }
  return true;
}();

}  // namespace
}  // namespace tandem::bench
