#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace tandem {
namespace {

double LogSumExp(std::span<const float> x) {
  const float mx = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (float v : x) sum += std::exp(static_cast<double>(v) - mx);
  return mx + std::log(sum);
}

int32_t ArgMax(std::span<const float> x) {
  return static_cast<int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

// A uniform double in [0, 1) from 53 random bits: portable across standard
// libraries, unlike std::uniform_real_distribution.
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

SequenceSampler::SequenceSampler(const SamplingParams& params, std::span<const int32_t> prompt_ids,
                                 uint64_t fallback_seed)
    : params_(params), rng_(params.seed.value_or(fallback_seed)) {
  for (int32_t id : prompt_ids) ++prompt_counts_[id];
}

void SequenceSampler::ApplyPenalties(std::span<float> logits) const {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (params_.repetition_penalty != 1.0f) {
    auto penalise = [&](int32_t id) {
      if (id < 0 || id >= vocab) return;
      float& l = logits[id];
      l = l > 0.0f ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    };
    for (const auto& [id, count] : prompt_counts_) penalise(id);
    for (const auto& [id, count] : generated_counts_) {
      if (!prompt_counts_.contains(id)) penalise(id);
    }
  }
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    for (const auto& [id, count] : generated_counts_) {
      if (id < 0 || id >= vocab) continue;
      logits[id] -= params_.frequency_penalty * static_cast<float>(count) + params_.presence_penalty;
    }
  }
}

void SequenceSampler::Observe(int32_t token) {
  if (!params_.greedy()) (void)Uniform01(rng_);  // Sample() draws once per token
  ++generated_counts_[token];
}

SampledToken SequenceSampler::Sample(std::span<float> logits) {
  SampledToken out;
  // Logprobs are reported from the model's distribution, before processing.
  const double raw_lse = LogSumExp(logits);
  std::vector<std::pair<int32_t, float>> top;
  if (params_.logprobs > 0) {
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    const size_t n = std::min<size_t>(params_.logprobs, order.size());
    std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    for (size_t i = 0; i < n; ++i) {
      top.emplace_back(order[i], static_cast<float>(logits[order[i]] - raw_lse));
    }
  }
  std::vector<float> raw(logits.begin(), logits.end());

  ApplyPenalties(logits);
  if (params_.greedy()) {
    out.token_id = ArgMax(logits);
  } else {
    // Candidates sorted by processed logit, highest first (ties: lower id).
    std::vector<int32_t> cand(logits.size());
    std::iota(cand.begin(), cand.end(), 0);
    size_t keep = cand.size();
    if (params_.top_k > 0) keep = std::min<size_t>(keep, params_.top_k);
    std::partial_sort(cand.begin(), cand.begin() + keep, cand.end(), [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    cand.resize(keep);
    std::vector<double> probs(keep);
    const double mx = logits[cand[0]] / params_.temperature;
    double sum = 0.0;
    for (size_t i = 0; i < keep; ++i) {
      probs[i] = std::exp(logits[cand[i]] / params_.temperature - mx);
      sum += probs[i];
    }
    for (double& p : probs) p /= sum;
    if (params_.top_p < 1.0f) {
      double cum = 0.0;
      size_t n = 0;
      while (n < keep && cum < params_.top_p) cum += probs[n++];
      keep = std::max<size_t>(n, 1);
    }
    if (params_.min_p > 0.0f) {
      const double floor = params_.min_p * probs[0];
      size_t n = 1;
      while (n < keep && probs[n] >= floor) ++n;
      keep = n;
    }
    double total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += probs[i];
    double u = Uniform01(rng_) * total;
    size_t pick = keep - 1;
    for (size_t i = 0; i < keep; ++i) {
      if (u < probs[i]) {
        pick = i;
        break;
      }
      u -= probs[i];
    }
    out.token_id = cand[pick];
  }
  out.logprob = static_cast<float>(raw[out.token_id] - raw_lse);
  out.top_logprobs = std::move(top);
  ++generated_counts_[out.token_id];
  return out;
}

}  // namespace tandem
