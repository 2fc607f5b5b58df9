// StepCostModel: how long one engine step takes, as a linear function of
// what the step computes, fitted by least squares to steps timed on the real
// engine (tandem-sim calibrate):
//
//   seconds = base + per_token x new tokens + per_attention x attention
//             + per_seq x sequences
//
// where attention = sum over the step's sequences of new_i x (context_i +
// (new_i + 1) / 2): the query-key pairs its causal attention computes. base
// is the fixed cost of a step (weights streamed once, launch, sampling set-up),
// per_token the matmul work per token, per_seq what each sequence costs
// beyond its tokens (sampling, the LM head's row). The line covers prefill
// chunks and decode batches alike (a decode step of B sequences is B tokens,
// B sequences and the sum of their contexts); calibrate reports it, and
// calibrations written before the two fits below have only it.
//
// Prefill workers get a model of their own (FitPrefill): the cost of a
// chunk without context is not linear in its tokens (on the Zen 3 host, one
// core: 16 tokens 96 ms, 96 tokens 461 ms, 256 tokens 1.10 s, so 6.0, 4.8 and
// 4.3 ms a token), and a line through every step misses the middle sizes by
// 7-11% (by 10-23% in a calibration whose largest chunks caught a slow
// minute), which near saturation moves TTFT by 20-60%. So the chunk's cost
// is interpolated between the token counts timed (token_curve), plus the
// attention and per-sequence terms.
//
// Decode workers get a model of their own, fitted to decode steps only and
// by relative error (FitDecode): over batches of 1 to 32 a decode step is
// not linear in the batch, and a least-squares fit in seconds is pulled to
// the largest steps, missing the small batches that make up most decode
// steps at moderate load by ~20% (docs/routing.md).
// Thread-safety: value type; pure functions.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem::sim {

struct StepShape {
  double new_tokens = 0;
  double attention = 0;
  double seqs = 0;
  // The shape of one sequence's part: `new_tokens` after `context` tokens.
  static StepShape Of(double new_tokens, double context) {
    return {new_tokens, new_tokens * (context + (new_tokens + 1) / 2), 1};
  }
  StepShape& operator+=(const StepShape& o) {
    new_tokens += o.new_tokens;
    attention += o.attention;
    seqs += o.seqs;
    return *this;
  }
};

struct StepCostModel {
  double base_s = 0;
  double per_token_s = 0;
  double per_attention_s = 0;
  double per_seq_s = 0;

  // When not empty: (tokens, seconds) of one sequence's chunk without
  // context, by increasing tokens, in place of base_s + per_token_s x
  // tokens: linear between points, the last segment's slope past the last,
  // the first point's cost below it; per_seq_s then counts the sequences
  // beyond the first.
  std::vector<std::pair<double, double>> token_curve;

  // Never below base_s (a fitted negative coefficient cannot make a step free).
  double Seconds(const StepShape& s) const;

  // Non-negative least squares over (shape, seconds) samples: every
  // coefficient >= 0. InvalidArgument with fewer than 4 samples or when they
  // do not tell the four coefficients apart.
  static absl::StatusOr<StepCostModel> Fit(const std::vector<std::pair<StepShape, double>>& samples);

  // The same over decode steps only (one new token per sequence), by
  // relative error. A decode step's tokens and sequences are one count, so
  // per_seq_s carries both and per_token_s is 0. Samples that are not decode
  // steps are left out; InvalidArgument with fewer than 3 decode samples or
  // when they do not tell base, attention and batch apart.
  static absl::StatusOr<StepCostModel> FitDecode(const std::vector<std::pair<StepShape, double>>& samples);

  // The curve over the one-sequence samples: per_attention_s by least
  // squares within each token count's samples (the counts timed at several
  // contexts tell it), each count's point its mean less that attention
  // cost, made non-decreasing (more tokens never cost less). `per_seq_s`
  // is given (one-sequence samples cannot tell it). InvalidArgument with
  // fewer than 2 token counts or none timed at two contexts.
  static absl::StatusOr<StepCostModel> FitPrefill(const std::vector<std::pair<StepShape, double>>& samples,
                                                  double per_seq_s);

  nlohmann::json ToJson() const;
  static absl::StatusOr<StepCostModel> FromJson(const nlohmann::json& j);
};

}  // namespace tandem::sim
