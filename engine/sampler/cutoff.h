// Where top-k, top-p and min-p cut the candidate order, found by selection
// on values instead of by sorting the vocabulary.
//
// Candidate order: processed logit descending, then token id ascending. Each
// filter keeps a prefix of that order, so its result is a Cut: the logit and
// id of the last token it keeps. A token is kept iff its logit is strictly
// greater than the cut's logit, or equal to it with an id no greater than
// the cut's id; so among tokens tied at the cut value the lowest ids stay.
//
// Why buckets and not a sort: the logits of a random-weight (or merely
// uncertain) model are nearly flat, so top_p 0.95 keeps ~90% of a 32k-256k
// vocabulary and sorting even the kept set costs milliseconds per token.
// LastKept histograms the logits into buckets of equal value width; the
// bucket index is monotone in the logit, so each bucket is a run of the
// candidate order. Walking the bucket totals finds the one bucket where the
// running weight reaches the target; only that bucket is resolved, by
// recursing on its narrower value range, or by sorting it once it is small.
// Cost O(vocab) per filter, whatever the share of the vocabulary it keeps.
// A small top_k first narrows the row to the tokens at or above the k-th
// largest of its 64-token block maxima, a floor for the k-th largest logit.
// Thread-safety: pure functions over caller-owned buffers.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <span>

#include "engine/sampler/sampling_params.h"

namespace tandem::sampling {

struct Cut {
  float logit = -std::numeric_limits<float>::infinity();  // of the last kept token
  int32_t last_id = std::numeric_limits<int32_t>::max();  // its id; -1 keeps none tied at `logit`

  bool Keeps(float l, int32_t id) const { return l > logit || (l == logit && id <= last_id); }
};

// The cut keeping fewer tokens (each keeps a prefix of the same order).
inline Cut Tighter(const Cut& a, const Cut& b) {
  if (a.logit != b.logit) return a.logit > b.logit ? a : b;
  return a.last_id < b.last_id ? a : b;
}

// Top-k / top-p: tokens are taken in candidate order while the weight taken
// before each is below `target` (> 0); returns the last one taken, the token
// at which the running weight first reaches `target`. `weights` [vocab] are
// >= 0; empty means 1 each (top-k: target k). Zero-weight and NaN-logit
// tokens never count. nullopt when the total weight stays below `target`
// (everything is kept).
std::optional<Cut> LastKept(std::span<const float> logits, std::span<const float> weights, double target);

// Min-p: the cut just before the first token in candidate order whose weight
// is below `floor`; nullopt when no token's is.
std::optional<Cut> BeforeFirstBelow(std::span<const float> logits, std::span<const float> weights, float floor);

// Zeroes weights[i] for every token `cut` drops.
void ApplyCut(const Cut& cut, std::span<const float> logits, std::span<float> weights);

// The whole filter chain of a sampled (not greedy) request: fills `weights`
// [vocab] with the softmax numerators e^(l/T - max/T) of the tokens kept and
// 0 for the rest, and returns the cut that keeps them (nullopt: all kept).
// Kept, in the order applied: the top_k first in candidate order; of those,
// the shortest prefix whose share of their total weight reaches top_p (at
// least one); of those, the prefix with weight >= min_p (the max's is 1).
// The weights are float (within 2 ulp of e^x in double, as is the float
// l/T the sampler always used), and the cuts follow them exactly: a
// double-precision softmax could move a cut only where the running share
// is within ~1e-7 of top_p or min_p.
std::optional<Cut> KeptWeights(const SamplingParams& params, std::span<const float> logits, std::span<float> weights);

}  // namespace tandem::sampling
