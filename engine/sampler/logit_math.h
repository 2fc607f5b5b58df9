// Whole-row loops of the sampler: max, argmax, log-sum-exp, softmax weights
// and the draw, in AVX2 (the engine's baseline). Reductions keep 8 lanes
// split by index, and the last partial vector goes through the same vector
// code, padded; so every result depends only on the row, never on the thread
// or the batch it ran in.
// Thread-safety: pure functions over caller-owned buffers.
#pragma once

#include <cstdint>
#include <span>

namespace tandem::sampling {

// Largest element, ignoring NaN; -inf when `x` is empty or all -inf / NaN.
float MaxOf(std::span<const float> x);

// Index of the largest element, the lowest index among equal maxima; 0 when
// nothing is larger than -inf.
int32_t ArgMax(std::span<const float> x);

// log(sum(e^x)) with e^(x - max) in float (Cephes' expf polynomial, within
// 2 ulp) and the sum in double: within ~1e-7 absolute of the exact value.
// -inf for an all -inf row.
double LogSumExp(std::span<const float> x);

// weights[i] = e^(x[i] / temperature - max / temperature): softmax numerators,
// 1 at the max. `max` must be MaxOf(x); temperature > 0; sizes equal.
void ScaledExp(std::span<const float> x, float temperature, float max, std::span<float> weights);

// Sum of `x` in double, in a fixed lane order.
double SumOf(std::span<const float> x);

// The index drawn with probability weights[i] / sum(weights) for u01 in
// [0, 1): the first index, in index order, at which the running sum exceeds
// u01 * sum. Walking in index order rather than in sorted order gives the same
// distribution. Never returns a zero-weight index; -1 when the sum is 0.
int32_t DrawByWeight(std::span<const float> weights, double u01);

}  // namespace tandem::sampling
