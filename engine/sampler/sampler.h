// Turns one sequence's logits into its next token, independently of the rest
// of the batch: penalties, temperature, top-k, top-p, min-p, then a draw from
// the sequence's own random stream (so a seed gives the same tokens whatever
// else is batched with it).
// Thread-safety: a SequenceSampler belongs to one sequence; not thread-safe.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/sampler/sampling_params.h"

namespace tandem {

struct SampledToken {
  int32_t token_id = 0;
  float logprob = 0.0f;                              // of the chosen token (after processing)
  std::vector<std::pair<int32_t, float>> top_logprobs;  // n best, highest first
};

class SequenceSampler {
 public:
  // `params` must be valid. `prompt_ids` take part in the repetition penalty.
  // `fallback_seed` seeds the stream when params.seed is unset.
  SequenceSampler(const SamplingParams& params, std::span<const int32_t> prompt_ids,
                  uint64_t fallback_seed);

  // Picks the next token from `logits` [vocab] (modified in place) and records
  // it as generated.
  SampledToken Sample(std::span<float> logits);

  // Records `token` as generated elsewhere (by another worker's copy of this
  // sampler) and advances the random stream exactly as Sample() would have,
  // so the following tokens are the ones a single process would draw.
  void Observe(int32_t token);

 private:
  void ApplyPenalties(std::span<float> logits) const;

  SamplingParams params_;
  std::mt19937_64 rng_;
  absl::flat_hash_map<int32_t, int32_t> prompt_counts_;     // token -> occurrences in the prompt
  absl::flat_hash_map<int32_t, int32_t> generated_counts_;  // token -> occurrences in the output
};

}  // namespace tandem
