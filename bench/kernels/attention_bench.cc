// Paged attention at SmolLM2-135M's head layout (9 query heads, 3 KV heads of
// 64) over a paged KV cache with 16-token blocks, fp32 or (the *Bf16, *Int8,
// *Fp8 cases) bf16, int8 (with its per-token scales) or fp8 E4M3:
//  - decode: B sequences of context L, one query token each; bound by reading
//    the KV once per KV head, so `frac_of_bw` counts those bytes
//    (B * L * 3 heads * 2 (K,V) * (64 * 4, 2 or 1 bytes, + 4 for int8's scale)) against the read
//    bandwidth (above 1 when the KV fits in cache);
//  - decode over a model's worth of layers (the *Layers case): the same step
//    run through every layer of a 30-layer cache, so the KV (118 MB at 16
//    sequences of 320 tokens) streams from memory as in a real decode step
//    instead of sitting in L2;
//  - prefill: one sequence, L query tokens attending causally to themselves.
// Thread-safety: benchmark thread only; the kernel uses the OpenMP team.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "bench/kernels/bench_shapes.h"
#include "bench/kernels/machine_limits.h"
#include "engine/kernels/paged_attention.h"
#include "engine/model/dtype.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"

namespace tandem::bench {
namespace {

constexpr int64_t kBlock = 16;

// A cache holding `num_seqs` sequences of `context` tokens (contiguous
// blocks per sequence), filled with small values.
struct AttentionSetup {
  KvCache cache;
  ForwardBatch batch;
  std::vector<float> q, out;
  std::vector<float> fp8_scales = std::vector<float>(kSmolKvHeads, 1.0f);

  AttentionSetup(int64_t num_seqs, int64_t context, int64_t query_tokens, DType dtype, int64_t layers = 1)
      : cache(KvCacheShape{layers, num_seqs * ((context + kBlock - 1) / kBlock), kBlock, kSmolKvHeads, kSmolHeadDim,
                           dtype}) {
    auto mem = cache.Memory();
    if (cache.shape().quantized()) FillQuantized(layers);
    for (size_t i = 0; !cache.shape().quantized() && i < mem.size() / DTypeSize(dtype); ++i) {
      const float value = 0.01f * static_cast<float>(i % 97);
      if (dtype == DType::kF32) {
        std::memcpy(mem.data() + 4 * i, &value, 4);
      } else {
        const uint16_t h = dtype == DType::kBF16 ? FloatToBf16(value) : FloatToF16(value);
        std::memcpy(mem.data() + 2 * i, &h, 2);
      }
    }
    const int64_t blocks_per_seq = (context + kBlock - 1) / kBlock;
    for (int64_t s = 0; s < num_seqs; ++s) {
      SequenceSlice slice{static_cast<int32_t>(query_tokens), static_cast<int32_t>(context), {}};
      for (int64_t b = 0; b < blocks_per_seq; ++b) slice.block_table.push_back(static_cast<int32_t>(s * blocks_per_seq + b));
      for (int64_t t = context - query_tokens; t < context; ++t) {
        batch.token_ids.push_back(0);
        batch.positions.push_back(static_cast<int32_t>(t));
        batch.slot_mapping.push_back(slice.block_table[t / kBlock] * kBlock + t % kBlock);
      }
      batch.seqs.push_back(std::move(slice));
    }
    q.assign(batch.num_tokens() * kSmolHeads * kSmolHeadDim, 0.1f);
    out.resize(q.size());
  }

  // Every slot of every layer written through WriteKv (codes and scales),
  // with the float fill's values.
  void FillQuantized(int64_t layers) {
    const int64_t kv_dim = kSmolKvHeads * kSmolHeadDim, slots = cache.shape().num_slots();
    ForwardBatch all;
    std::vector<float> kv(slots * kv_dim);
    for (int64_t i = 0; i < slots * kv_dim; ++i) kv[i] = 0.01f * static_cast<float>(i % 97);
    for (int64_t slot = 0; slot < slots; ++slot) {
      all.token_ids.push_back(0);
      all.positions.push_back(0);
      all.slot_mapping.push_back(static_cast<int32_t>(slot));
    }
    for (int64_t layer = 0; layer < layers; ++layer) {
      kernels::WriteKv(all, cache, layer, kv.data(), kv.data(), kv_dim, {fp8_scales.data(), fp8_scales.data()});
    }
  }

  void Run(int64_t layer = 0) {
    const kernels::AttentionShape shape{kSmolHeads, kSmolKvHeads, kSmolHeadDim,
                                        static_cast<float>(1.0 / std::sqrt(static_cast<double>(kSmolHeadDim))), 0};
    kernels::PagedAttention(batch, cache, layer, shape, q.data(), kSmolHeads * kSmolHeadDim, out.data(),
                            {fp8_scales.data(), fp8_scales.data()});
  }
};

void Decode(benchmark::State& state, DType dtype) {
  const int64_t seqs = state.range(0), context = state.range(1);
  AttentionSetup setup(seqs, context, 1, dtype);
  for (auto _ : state) {
    setup.Run();
    benchmark::DoNotOptimize(setup.out.data());
  }
  const double row_bytes = kSmolHeadDim * static_cast<double>(DTypeSize(dtype)) + (dtype == DType::kI8 ? 4 : 0);
  const double bytes = static_cast<double>(seqs) * context * kSmolKvHeads * 2 * row_bytes * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["frac_of_bw"] = benchmark::Counter(bytes / Limits().read_bytes_per_s, benchmark::Counter::kIsRate);
}
void BM_PagedAttentionDecode(benchmark::State& state) { Decode(state, DType::kF32); }
void BM_PagedAttentionDecodeBf16(benchmark::State& state) { Decode(state, DType::kBF16); }
BENCHMARK(BM_PagedAttentionDecode)->Args({1, 512})->Args({16, 512})->Args({1, 2048})->Args({16, 2048})->UseRealTime();
BENCHMARK(BM_PagedAttentionDecodeBf16)->Args({1, 512})->Args({16, 512})->Args({16, 2048})->UseRealTime();
void BM_PagedAttentionDecodeInt8(benchmark::State& state) { Decode(state, DType::kI8); }
void BM_PagedAttentionDecodeFp8(benchmark::State& state) { Decode(state, DType::kF8E4M3); }
BENCHMARK(BM_PagedAttentionDecodeInt8)->Args({1, 512})->Args({16, 512})->Args({16, 2048})->UseRealTime();
BENCHMARK(BM_PagedAttentionDecodeFp8)->Args({1, 512})->Args({16, 512})->Args({16, 2048})->UseRealTime();

// One decode step's attention through every layer (args: sequences, context, layers).
void DecodeLayers(benchmark::State& state, DType dtype) {
  const int64_t seqs = state.range(0), context = state.range(1), layers = state.range(2);
  AttentionSetup setup(seqs, context, 1, dtype, layers);
  for (auto _ : state) {
    for (int64_t l = 0; l < layers; ++l) setup.Run(l);
    benchmark::DoNotOptimize(setup.out.data());
  }
  const double row_bytes = kSmolHeadDim * static_cast<double>(DTypeSize(dtype)) + (dtype == DType::kI8 ? 4 : 0);
  const double bytes = static_cast<double>(seqs) * context * layers * kSmolKvHeads * 2 * row_bytes * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["frac_of_bw"] = benchmark::Counter(bytes / Limits().read_bytes_per_s, benchmark::Counter::kIsRate);
}
void BM_PagedAttentionDecodeBf16Layers(benchmark::State& state) { DecodeLayers(state, DType::kBF16); }
void BM_PagedAttentionDecodeInt8Layers(benchmark::State& state) { DecodeLayers(state, DType::kI8); }
void BM_PagedAttentionDecodeFp8Layers(benchmark::State& state) { DecodeLayers(state, DType::kF8E4M3); }
BENCHMARK(BM_PagedAttentionDecodeBf16Layers)->Args({16, 320, 30})->Args({16, 320, 8})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PagedAttentionDecodeInt8Layers)->Args({16, 320, 30})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PagedAttentionDecodeFp8Layers)->Args({16, 320, 30})->UseRealTime()->Unit(benchmark::kMillisecond);

void Prefill(benchmark::State& state, DType dtype) {
  const int64_t tokens = state.range(0);
  AttentionSetup setup(1, tokens, tokens, dtype);
  for (auto _ : state) {
    setup.Run();
    benchmark::DoNotOptimize(setup.out.data());
  }
  // q.k and p.v: 2 * 2 * head_dim flops per (query head, visible key).
  const double flops = 4.0 * kSmolHeads * kSmolHeadDim * tokens * (tokens + 1) / 2 * state.iterations();
  state.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_of_peak"] = benchmark::Counter(flops / Limits().fp32_flops_per_s, benchmark::Counter::kIsRate);
}
void BM_PagedAttentionPrefill(benchmark::State& state) { Prefill(state, DType::kF32); }
void BM_PagedAttentionPrefillBf16(benchmark::State& state) { Prefill(state, DType::kBF16); }
BENCHMARK(BM_PagedAttentionPrefill)->Arg(256)->Arg(1024)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PagedAttentionPrefillBf16)->Arg(1024)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tandem::bench
