// Whole-model forward steps on a real HF model directory, judged against the
// limits measured in the same process (so "fraction of bandwidth" compares
// like with like on a shared machine). Registered only when the environment
// names a model: TANDEM_BENCH_MODEL=DIR (e.g. a SmolLM2-135M-shape model from
// tools/models/make_random_model.py).
//
//  - BM_ModelDecode/<precision>/<batch>: one decode step of `batch` sequences
//    with 128 tokens of context each. A step reads every matmul weight once;
//    `frac_of_bw` = those bytes per second over the read bandwidth (batch 1
//    is the "decode reads the weights at >= 85% of bandwidth").
//  - BM_ModelPrefill/<precision>/<tokens>: one prompt of `tokens` tokens;
//    `frac_of_peak` = the matmul flops (2 x tokens x matmul parameters, LM head
//    for the last token only) per second over the peak of the instructions
//    that precision runs (AMX for bf16 on an AMX CPU, else fp32 FMA).
// Thread-safety: benchmark bodies run on the benchmark thread; the model uses
// the OpenMP team.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/kernels/machine_limits.h"
#include "engine/kernels/ops.h"
#include "engine/model/llama_model.h"

namespace tandem::bench {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr int64_t kContext = 128;  // decode: tokens already in each sequence's KV

using kernels::MatMulPrecision;

struct LoadedModel {
  std::unique_ptr<LlamaModel> model;
  int64_t matmul_params = 0;  // layers' projections (without the LM head)
  int64_t lm_head_params = 0;
};

LoadedModel* Load(const std::string& dir, MatMulPrecision p) {
  static LoadedModel models[2];
  LoadedModel& m = models[p == MatMulPrecision::kBf16 ? 1 : 0];
  if (m.model) return &m;
  auto loaded = LlamaModel::Load(dir, {}, nullptr, p);
  if (!loaded.ok()) return nullptr;
  m.model = *std::move(loaded);
  const ModelConfig& c = m.model->config();
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  m.matmul_params = c.num_hidden_layers * (c.hidden_size * (q + 2 * kv) + q * c.hidden_size +
                                           3 * c.hidden_size * c.intermediate_size);
  m.lm_head_params = c.vocab_size * c.hidden_size;
  return &m;
}

// A batch of `seqs` sequences, each adding `tokens` tokens after `start`
// cached ones, in contiguous blocks.
ForwardBatch MakeBatch(int64_t seqs, int64_t start, int64_t tokens, int64_t vocab) {
  ForwardBatch b;
  const int64_t blocks_per_seq = (start + tokens + kBlockSize - 1) / kBlockSize;
  for (int64_t s = 0; s < seqs; ++s) {
    SequenceSlice slice;
    slice.num_query_tokens = static_cast<int32_t>(tokens);
    slice.context_len = static_cast<int32_t>(start + tokens);
    for (int64_t i = 0; i < blocks_per_seq; ++i) slice.block_table.push_back(static_cast<int32_t>(s * blocks_per_seq + i));
    for (int64_t p = start; p < start + tokens; ++p) {
      b.token_ids.push_back(static_cast<int32_t>((s * 7919 + p * 104729) % vocab));
      b.positions.push_back(static_cast<int32_t>(p));
      b.slot_mapping.push_back(slice.block_table[p / kBlockSize] * kBlockSize + p % kBlockSize);
    }
    b.seqs.push_back(std::move(slice));
    b.logit_indices.push_back(b.num_tokens() - 1);
  }
  return b;
}

double PeakFor(MatMulPrecision p) {
  if (p == MatMulPrecision::kBf16 && kernels::ActiveCpuIsa() == kernels::CpuIsa::kAmx) {
    return Limits().amx_bf16_flops_per_s;
  }
  return Limits().fp32_flops_per_s;
}

void BM_ModelDecode(benchmark::State& state, std::string dir, MatMulPrecision p) {
  LoadedModel* m = Load(dir, p);
  if (m == nullptr) return state.SkipWithError("cannot load TANDEM_BENCH_MODEL");
  const int64_t seqs = state.range(0);
  const int64_t vocab = m->model->config().vocab_size;
  const int64_t blocks = seqs * ((kContext + 1 + kBlockSize - 1) / kBlockSize);
  KvCache cache(m->model->MakeKvCacheShape(blocks, kBlockSize, DType::kBF16));
  // Fill the context once; every timed step then decodes position kContext
  // (rewriting the same slot), so each iteration is the same step.
  if (!m->model->Forward(MakeBatch(seqs, 0, kContext, vocab), cache).ok()) return state.SkipWithError("prefill");
  const ForwardBatch step = MakeBatch(seqs, kContext, 1, vocab);
  for (auto _ : state) {
    auto logits = m->model->Forward(step, cache);
    benchmark::DoNotOptimize(logits);
  }
  const double bytes = 2.0 * (m->matmul_params + m->lm_head_params) * state.iterations();  // BF16 weights
  state.counters["weight_GB_per_s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_of_bw"] = benchmark::Counter(bytes / Limits().read_bytes_per_s, benchmark::Counter::kIsRate);
  state.counters["tok_per_s"] = benchmark::Counter(static_cast<double>(seqs * state.iterations()),
                                                   benchmark::Counter::kIsRate);
  state.SetLabel(std::string(kernels::CpuIsaName(kernels::ActiveCpuIsa())));
}

void BM_ModelPrefill(benchmark::State& state, std::string dir, MatMulPrecision p) {
  LoadedModel* m = Load(dir, p);
  if (m == nullptr) return state.SkipWithError("cannot load TANDEM_BENCH_MODEL");
  const int64_t tokens = state.range(0);
  const int64_t vocab = m->model->config().vocab_size;
  KvCache cache(m->model->MakeKvCacheShape((tokens + kBlockSize - 1) / kBlockSize, kBlockSize, DType::kBF16));
  const ForwardBatch prompt = MakeBatch(1, 0, tokens, vocab);
  for (auto _ : state) {
    auto logits = m->model->Forward(prompt, cache);
    benchmark::DoNotOptimize(logits);
  }
  const double flops = 2.0 * (tokens * m->matmul_params + m->lm_head_params) * state.iterations();
  state.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_of_peak"] = benchmark::Counter(flops / PeakFor(p), benchmark::Counter::kIsRate);
  state.counters["tok_per_s"] = benchmark::Counter(static_cast<double>(tokens * state.iterations()),
                                                   benchmark::Counter::kIsRate);
  state.SetLabel(std::string(kernels::CpuIsaName(kernels::ActiveCpuIsa())));
}

const bool kRegistered = [] {
  const char* dir = std::getenv("TANDEM_BENCH_MODEL");
  if (dir == nullptr || *dir == '\0') return false;
  for (MatMulPrecision p : {MatMulPrecision::kF32, MatMulPrecision::kBf16}) {
    const std::string name = p == MatMulPrecision::kBf16 ? "bf16" : "f32";
    benchmark::RegisterBenchmark(("BM_ModelDecode/" + name).c_str(), BM_ModelDecode, std::string(dir), p)
        ->Arg(1)->Arg(16)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("BM_ModelPrefill/" + name).c_str(), BM_ModelPrefill, std::string(dir), p)
        ->Arg(64)->Arg(256)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
}  // namespace tandem::bench
