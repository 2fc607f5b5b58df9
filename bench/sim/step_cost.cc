#include "bench/sim/step_cost.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace tandem::sim {

double StepCostModel::Seconds(const StepShape& s) const {
  const double t = base_s + per_token_s * s.new_tokens + per_attention_s * s.attention + per_seq_s * s.seqs;
  return std::max(t, base_s);
}

absl::StatusOr<StepCostModel> StepCostModel::Fit(const std::vector<std::pair<StepShape, double>>& samples) {
  if (samples.size() < 4) return absl::InvalidArgumentError("fitting 4 coefficients needs at least 4 samples");
  // Normal equations A^T A x = A^T b of a 4-column design, solved by Gaussian
  // elimination with partial pivoting: a 4x4 system does not warrant a
  // linear-algebra dependency. Columns are scaled to unit RMS first, so the
  // attention column (millions) and the constant (1) condition alike.
  constexpr int kN = 4;
  auto row = [](const StepShape& s) { return std::array<double, kN>{1.0, s.new_tokens, s.attention, s.seqs}; };
  std::array<double, kN> scale{};
  for (const auto& [s, t] : samples) {
    const auto r = row(s);
    for (int i = 0; i < kN; ++i) scale[i] += r[i] * r[i];
  }
  for (int i = 0; i < kN; ++i) {
    scale[i] = std::sqrt(scale[i] / static_cast<double>(samples.size()));
    if (!(scale[i] > 0)) return absl::InvalidArgumentError("a step feature is zero in every sample");
  }
  std::array<std::array<double, kN + 1>, kN> m{};
  for (const auto& [s, t] : samples) {
    auto r = row(s);
    for (int i = 0; i < kN; ++i) r[i] /= scale[i];
    for (int i = 0; i < kN; ++i) {
      for (int j = 0; j < kN; ++j) m[i][j] += r[i] * r[j];
      m[i][kN] += r[i] * t;
    }
  }
  for (int c = 0; c < kN; ++c) {
    int pivot = c;
    for (int r = c + 1; r < kN; ++r) {
      if (std::abs(m[r][c]) > std::abs(m[pivot][c])) pivot = r;
    }
    if (std::abs(m[pivot][c]) < 1e-12 * static_cast<double>(samples.size())) {
      return absl::InvalidArgumentError("the samples do not tell the step cost's coefficients apart (vary the "
                                        "tokens, contexts and batch sizes)");
    }
    std::swap(m[c], m[pivot]);
    for (int r = 0; r < kN; ++r) {
      if (r == c) continue;
      const double f = m[r][c] / m[c][c];
      for (int k = c; k <= kN; ++k) m[r][k] -= f * m[c][k];
    }
  }
  std::array<double, kN> x{};
  for (int i = 0; i < kN; ++i) x[i] = m[i][kN] / m[i][i] / scale[i];
  return StepCostModel{x[0], x[1], x[2], x[3]};
}

nlohmann::json StepCostModel::ToJson() const {
  return {{"base_s", base_s}, {"per_token_s", per_token_s}, {"per_attention_s", per_attention_s},
          {"per_seq_s", per_seq_s}};
}

absl::StatusOr<StepCostModel> StepCostModel::FromJson(const nlohmann::json& j) {
  StepCostModel m;
  for (auto [name, field] : {std::pair{"base_s", &m.base_s}, {"per_token_s", &m.per_token_s},
                             {"per_attention_s", &m.per_attention_s}, {"per_seq_s", &m.per_seq_s}}) {
    if (!j.is_object() || !j.contains(name) || !j[name].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("step cost model: '", name, "' missing or not a number"));
    }
    *field = j[name].get<double>();
  }
  if (!(m.base_s >= 0)) return absl::InvalidArgumentError("step cost model: base_s must be >= 0");
  return m;
}

}  // namespace tandem::sim
