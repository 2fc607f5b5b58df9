// SequenceSampler::Sample at SmolLM2's vocabulary (49152) and Llama 3's
// (128256): near-flat logits (a random-weight model, where top_p 0.95 keeps
// ~90% of the vocabulary), spread and peaked ones, under the model default
// (temperature 0.8, top_p 0.95), top_k 50, min_p and greedy. The sampler reads
// each logit a few times, so the figure to compare with is memory bandwidth
// on a vocab * 4 byte row that sits in L2.
// Thread-safety: benchmark thread only.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "engine/sampler/sampler.h"

namespace tandem::bench {
namespace {

enum Logits { kFlat, kSpread, kPeaked };
enum Filter { kDefault, kTopK, kMinP, kGreedy };

std::vector<float> MakeLogits(Logits kind, size_t vocab) {
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(vocab);
  for (float& v : x) v = (kind == kFlat ? 0.02f : kind == kSpread ? 3.0f : 1.0f) * normal(rng);
  if (kind == kPeaked) {
    for (int i = 0; i < 5; ++i) x[rng() % vocab] = 14.0f + static_cast<float>(i);
  }
  return x;
}

SamplingParams MakeParams(Filter f) {
  SamplingParams p;
  p.temperature = f == kGreedy ? 0.0f : 0.8f;
  p.top_p = f == kDefault ? 0.95f : 1.0f;
  p.top_k = f == kTopK ? 50 : 0;
  p.min_p = f == kMinP ? 0.05f : 0.0f;
  p.seed = 1;
  return p;
}

// Args: vocab, Logits, Filter.
void BM_Sample(benchmark::State& state) {
  const size_t vocab = state.range(0);
  const std::vector<float> logits = MakeLogits(static_cast<Logits>(state.range(1)), vocab);
  std::vector<float> row = logits;  // no penalties: Sample leaves it as it is
  SequenceSampler sampler(MakeParams(static_cast<Filter>(state.range(2))), {}, 0);
  for (auto _ : state) benchmark::DoNotOptimize(sampler.Sample(row).token_id);
  state.SetBytesProcessed(state.iterations() * vocab * sizeof(float));
}
BENCHMARK(BM_Sample)
    ->ArgNames({"vocab", "logits", "filter"})
    ->Args({49152, kFlat, kDefault})
    ->Args({49152, kSpread, kDefault})
    ->Args({49152, kPeaked, kDefault})
    ->Args({49152, kFlat, kTopK})
    ->Args({49152, kFlat, kMinP})
    ->Args({49152, kFlat, kGreedy})
    ->Args({128256, kFlat, kDefault})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace tandem::bench
