#include "bench/sim/step_cost.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"

namespace tandem::sim {

double StepCostModel::Seconds(const StepShape& s) const {
  const double t = base_s + per_token_s * s.new_tokens + per_attention_s * s.attention + per_seq_s * s.seqs;
  return std::max(t, base_s);
}

absl::StatusOr<StepCostModel> StepCostModel::Fit(const std::vector<std::pair<StepShape, double>>& samples) {
  if (samples.size() < 4) return absl::InvalidArgumentError("fitting 4 coefficients needs at least 4 samples");
  // Non-negative least squares: no coefficient may be negative (a step
  // never gets cheaper with more work), and noisy timings can pull an
  // unconstrained fit below zero. With 4 coefficients the exact solution is
  // found by enumeration: the optimum is the plain least-squares fit on its
  // own support, so the best fit among the 15 supports whose solution is
  // non-negative is it. Each is solved from its normal equations by Gaussian
  // elimination with partial pivoting (a 4x4 system does not warrant a
  // linear-algebra dependency), columns scaled to unit RMS first so the
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
  // The least-squares solution on the columns in `mask` (scaled), or none
  // when those columns do not tell their coefficients apart.
  auto solve = [&](int mask) -> std::optional<std::array<double, kN>> {
    std::vector<int> cols;
    for (int i = 0; i < kN; ++i) {
      if (mask & (1 << i)) cols.push_back(i);
    }
    const int n = static_cast<int>(cols.size());
    std::vector<std::vector<double>> m(n, std::vector<double>(n + 1, 0.0));
    for (const auto& [s, t] : samples) {
      const auto r = row(s);
      for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) m[a][b] += r[cols[a]] / scale[cols[a]] * r[cols[b]] / scale[cols[b]];
        m[a][n] += r[cols[a]] / scale[cols[a]] * t;
      }
    }
    for (int c = 0; c < n; ++c) {
      int pivot = c;
      for (int r = c + 1; r < n; ++r) {
        if (std::abs(m[r][c]) > std::abs(m[pivot][c])) pivot = r;
      }
      if (std::abs(m[pivot][c]) < 1e-12 * static_cast<double>(samples.size())) return std::nullopt;
      std::swap(m[c], m[pivot]);
      for (int r = 0; r < n; ++r) {
        if (r == c) continue;
        const double f = m[r][c] / m[c][c];
        for (int k = c; k <= n; ++k) m[r][k] -= f * m[c][k];
      }
    }
    std::array<double, kN> x{};
    for (int a = 0; a < n; ++a) x[cols[a]] = m[a][n] / m[a][a] / scale[cols[a]];
    return x;
  };
  std::optional<std::array<double, kN>> best;
  double best_sse = std::numeric_limits<double>::infinity();
  bool full_rank = false;
  for (int mask = (1 << kN) - 1; mask >= 1; --mask) {
    const std::optional<std::array<double, kN>> x = solve(mask);
    if (mask == (1 << kN) - 1) full_rank = x.has_value();
    if (!x || std::any_of(x->begin(), x->end(), [](double v) { return v < 0; })) continue;
    double sse = 0;
    for (const auto& [s, t] : samples) {
      const auto r = row(s);
      double p = 0;
      for (int i = 0; i < kN; ++i) p += (*x)[i] * r[i];
      sse += (p - t) * (p - t);
    }
    if (sse < best_sse) {
      best_sse = sse;
      best = x;
    }
  }
  if (!full_rank || !best) {
    return absl::InvalidArgumentError("the samples do not tell the step cost's coefficients apart (vary the "
                                      "tokens, contexts and batch sizes)");
  }
  return StepCostModel{(*best)[0], (*best)[1], (*best)[2], (*best)[3]};
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
