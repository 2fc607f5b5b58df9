// Rng: the seeded random source behind every tandem-bench generator.
//
// std::mt19937_64's output is fixed by the standard, but the std::*_distribution
// algorithms are not (libstdc++ and libc++ differ), so a dataset or arrival
// schedule drawn through them could change with the toolchain. The few
// distributions the benchmark needs are written out here on top of the engine,
// which makes "same --seed, same requests" hold on every platform.
// Thread-safety: not thread-safe; one Rng per generator.
#pragma once

#include <cstdint>
#include <random>

namespace tandem::bench {

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  // Uniform in [0, 1), 53 random bits.
  double Uniform01();
  // Uniform integer in [lo, hi] (inclusive); requires lo <= hi. Unbiased
  // (rejection of the engine's top remainder).
  int64_t UniformInt(int64_t lo, int64_t hi);
  // Standard normal (Box-Muller; the second value is discarded so each call
  // consumes a fixed amount of the stream).
  double Normal();
  // Exponential with the given mean (> 0).
  double Exponential(double mean);
  // Gamma with shape k > 0 and scale theta > 0 (mean k * theta), by
  // Marsaglia and Tsang's method; k < 1 via Gamma(k + 1) * U^(1/k).
  double Gamma(double shape, double scale);
  // exp(Normal(mu, sigma)).
  double LogNormal(double mu, double sigma);

 private:
  std::mt19937_64 engine_;
};

}  // namespace tandem::bench
