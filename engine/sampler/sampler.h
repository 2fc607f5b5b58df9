// Turns one sequence's logits into its next token, independently of the rest
// of the batch: penalties, temperature, top-k, top-p, min-p, then a draw from
// the sequence's own random stream (so a seed gives the same tokens whatever
// else is batched with it).
//
// Sample() costs O(vocab) whatever the filters keep: it never sorts the
// vocabulary (see cutoff.h) and draws by walking the kept tokens in id order.
// Thread-safety: a SequenceSampler belongs to one sequence; not thread-safe.
// Different samplers may run on different threads at once: their scratch
// memory is per thread.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/sampler/sampled_token.h"
#include "engine/sampler/sampling_params.h"

namespace tandem {

class SequenceSampler {
 public:
  // `params` must be valid. `prompt_ids` take part in the repetition penalty.
  // `fallback_seed` seeds the stream when params.seed is unset.
  SequenceSampler(const SamplingParams& params, std::span<const int32_t> prompt_ids,
                  uint64_t fallback_seed);

  // Picks the next token from `logits` [vocab] (penalties are applied in
  // place) and records it as generated. Draws one number from the stream
  // unless greedy. Filters keep a prefix of the order logit descending, id
  // ascending: tokens tied at a cut-off value are kept lowest id first.
  SampledToken Sample(std::span<float> logits);

  // Records `token` as generated elsewhere (by another worker's copy of this
  // sampler) and advances the random stream exactly as Sample() would have,
  // so the following tokens are the ones a single process would draw.
  void Observe(int32_t token);

 private:
  // Applies the penalties in place, first saving each touched logit's old
  // value in raw_logits_.
  void ApplyPenalties(std::span<float> logits);
  // The logit `token` had before ApplyPenalties.
  float RawLogit(std::span<const float> logits, int32_t token) const;
  // Temperature, top-k, top-p, min-p and the draw over the processed logits.
  int32_t Draw(std::span<const float> logits);

  SamplingParams params_;
  std::mt19937_64 rng_;
  absl::flat_hash_map<int32_t, int32_t> prompt_counts_;     // token -> occurrences in the prompt
  absl::flat_hash_map<int32_t, int32_t> generated_counts_;  // token -> occurrences in the output
  std::vector<std::pair<int32_t, float>> raw_logits_;       // token -> logit before penalties (this call)
};

}  // namespace tandem
