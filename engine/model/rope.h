// Rotary position embedding tables, with the `linear` and `llama3` scalings.
// Frequencies and angles are computed in double and rounded once to float, so
// long positions keep their precision.
// Thread-safety: immutable after construction.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/model/model_config.h"

namespace tandem {

class RopeTable {
 public:
  RopeTable(int64_t head_dim, double theta, const RopeScaling& scaling);

  // Fills cos/sin, each [positions.size()][head_dim/2].
  void Compute(std::span<const int32_t> positions, std::vector<float>& cos,
               std::vector<float>& sin) const;

  const std::vector<double>& inv_freq() const { return inv_freq_; }

 private:
  std::vector<double> inv_freq_;  // [head_dim/2]
};

}  // namespace tandem
