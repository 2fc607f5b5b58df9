#include "engine/sampler/sampler.h"

#include <algorithm>

#include "engine/sampler/cutoff.h"
#include "engine/sampler/logit_math.h"

namespace tandem {
namespace {

// A uniform double in [0, 1) from 53 random bits: portable across standard
// libraries, unlike std::uniform_real_distribution.
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// The n best tokens of `raw`, highest logit first, lower id first on ties:
// one pass keeping a sorted list of at most n (n <= 20).
std::vector<std::pair<int32_t, float>> TopLogprobs(std::span<const float> raw, size_t n, double lse) {
  auto before = [&](int32_t a, int32_t b) { return raw[a] != raw[b] ? raw[a] > raw[b] : a < b; };
  std::vector<int32_t> best;
  best.reserve(n + 1);
  for (int32_t i = 0; i < static_cast<int32_t>(raw.size()); ++i) {
    // Ids rise, so a token tied with the worst kept one ranks after it.
    if (best.size() == n && !(raw[i] > raw[best.back()])) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), i, before), i);
    if (best.size() > n) best.pop_back();
  }
  std::vector<std::pair<int32_t, float>> top;
  for (int32_t id : best) top.emplace_back(id, static_cast<float>(raw[id] - lse));
  return top;
}

}  // namespace

SequenceSampler::SequenceSampler(const SamplingParams& params, std::span<const int32_t> prompt_ids,
                                 uint64_t fallback_seed)
    : params_(params), rng_(params.seed.value_or(fallback_seed)) {
  for (int32_t id : prompt_ids) ++prompt_counts_[id];
}

void SequenceSampler::ApplyPenalties(std::span<float> logits) {
  raw_logits_.clear();
  const int32_t vocab = static_cast<int32_t>(logits.size());
  const bool repetition = params_.repetition_penalty != 1.0f;
  const bool additive = params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f;
  if (!repetition && !additive) return;
  // Every token touched below, once: the prompt's (repetition only) and the output's.
  auto save = [&](int32_t id) {
    if (id >= 0 && id < vocab) raw_logits_.emplace_back(id, logits[id]);
  };
  if (repetition) {
    for (const auto& [id, count] : prompt_counts_) save(id);
  }
  for (const auto& [id, count] : generated_counts_) {
    if (!repetition || !prompt_counts_.contains(id)) save(id);
  }
  if (repetition) {
    for (const auto& [id, raw] : raw_logits_) {
      float& l = logits[id];
      l = l > 0.0f ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
  if (additive) {
    for (const auto& [id, count] : generated_counts_) {
      if (id < 0 || id >= vocab) continue;
      logits[id] -= params_.frequency_penalty * static_cast<float>(count) + params_.presence_penalty;
    }
  }
}

float SequenceSampler::RawLogit(std::span<const float> logits, int32_t token) const {
  for (const auto& [id, raw] : raw_logits_) {
    if (id == token) return raw;
  }
  return logits[token];
}

void SequenceSampler::Observe(int32_t token) {
  if (!params_.greedy()) (void)Uniform01(rng_);  // Sample() draws once per token
  ++generated_counts_[token];
}

int32_t SequenceSampler::Draw(std::span<const float> logits) {
  // [vocab] softmax numerators; per thread so that no call allocates.
  thread_local std::vector<float> weights;
  weights.resize(logits.size());
  (void)sampling::KeptWeights(params_, logits, weights);
  const int32_t id = sampling::DrawByWeight(weights, Uniform01(rng_));
  return id >= 0 ? id : sampling::ArgMax(logits);  // -1: no weight at all (a NaN row)
}

SampledToken SequenceSampler::Sample(std::span<float> logits) {
  SampledToken out;
  // Logprobs are reported from the model's distribution, before processing.
  const double raw_lse = sampling::LogSumExp(logits);
  if (params_.logprobs > 0) out.top_logprobs = TopLogprobs(logits, params_.logprobs, raw_lse);
  ApplyPenalties(logits);
  out.token_id = params_.greedy() ? sampling::ArgMax(logits) : Draw(logits);
  out.logprob = static_cast<float>(RawLogit(logits, out.token_id) - raw_lse);
  ++generated_counts_[out.token_id];
  return out;
}

}  // namespace tandem
