#include "bench/sim/step_cost.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem::sim {

double StepCostModel::Seconds(const StepShape& s) const {
  if (!token_curve.empty()) {
    const double n = s.new_tokens;
    double chunk = token_curve.front().second;
    for (size_t i = 1; i < token_curve.size(); ++i) {
      const auto [n0, t0] = token_curve[i - 1];
      const auto [n1, t1] = token_curve[i];
      if (n > n0 && (n <= n1 || i + 1 == token_curve.size())) chunk = t0 + (t1 - t0) * (n - n0) / (n1 - n0);
    }
    return std::max(0.0, chunk + per_attention_s * s.attention + per_seq_s * std::max(0.0, s.seqs - 1));
  }
  const double t = base_s + per_token_s * s.new_tokens + per_attention_s * s.attention + per_seq_s * s.seqs;
  return std::max(t, base_s);
}

absl::StatusOr<StepCostModel> StepCostModel::FitPrefill(const std::vector<std::pair<StepShape, double>>& samples,
                                                        double per_seq_s) {
  std::map<double, std::vector<std::pair<double, double>>> by_tokens;  // tokens -> (attention, seconds)
  for (const auto& [s, t] : samples) {
    if (s.seqs == 1) by_tokens[s.new_tokens].emplace_back(s.attention, t);
  }
  if (by_tokens.size() < 2) return absl::InvalidArgumentError("a prefill curve needs at least 2 token counts timed");
  auto mean = [](const std::vector<std::pair<double, double>>& v, bool second) {
    double sum = 0;
    for (const auto& p : v) sum += second ? p.second : p.first;
    return sum / static_cast<double>(v.size());
  };
  // Least squares for one attention slope with a level per token count.
  double num = 0, den = 0;
  for (const auto& [n, v] : by_tokens) {
    const double ma = mean(v, false), mt = mean(v, true);
    for (const auto& [a, t] : v) {
      num += (a - ma) * (t - mt);
      den += (a - ma) * (a - ma);
    }
  }
  if (!(den > 0)) return absl::InvalidArgumentError("a prefill curve needs a token count timed at two contexts");
  StepCostModel m;
  m.per_attention_s = std::max(0.0, num / den);
  m.per_seq_s = per_seq_s;
  double floor = 0;
  for (const auto& [n, v] : by_tokens) {
    floor = std::max(floor, mean(v, true) - m.per_attention_s * mean(v, false));
    m.token_curve.emplace_back(n, floor);
  }
  m.base_s = m.token_curve.front().second;
  return m;
}

namespace {

constexpr int kN = 4;  // base, per token, per attention pair, per sequence
using Row = std::array<double, kN>;

Row FeaturesOf(const StepShape& s) { return {1.0, s.new_tokens, s.attention, s.seqs}; }

// Non-negative least squares on the columns in `allowed` (bit i: feature
// i), each sample weighted by 1, or by 1/seconds when `relative`. With
// at most 4 coefficients the exact solution is found by enumeration: the
// optimum is the plain least-squares fit on its own support, so the best
// fit among the supports whose solution is non-negative is it. Each is
// solved from its normal equations by Gaussian elimination with partial
// pivoting (a 4x4 system does not warrant a linear-algebra dependency),
// columns scaled to unit RMS first so the attention column (millions) and
// the constant (1) condition alike.
absl::StatusOr<Row> NonNegativeFit(const std::vector<std::pair<StepShape, double>>& samples, int allowed,
                                   bool relative) {
  std::vector<std::pair<Row, double>> rows;  // weighted features, weighted seconds
  for (const auto& [s, t] : samples) {
    double w = 1;
    if (relative) {
      if (!(t > 0)) return absl::InvalidArgumentError("a relative fit needs every sample's time > 0");
      w = 1 / t;
    }
    Row r = FeaturesOf(s);
    for (double& v : r) v *= w;
    rows.emplace_back(r, t * w);
  }
  Row scale{};
  for (const auto& [r, t] : rows) {
    for (int i = 0; i < kN; ++i) scale[i] += r[i] * r[i];
  }
  for (int i = 0; i < kN; ++i) {
    if (!(allowed & (1 << i))) continue;
    scale[i] = std::sqrt(scale[i] / static_cast<double>(rows.size()));
    if (!(scale[i] > 0)) return absl::InvalidArgumentError("a step feature is zero in every sample");
  }
  // The least-squares solution on the columns in `mask` (scaled), or none
  // when those columns do not tell their coefficients apart.
  auto solve = [&](int mask) -> std::optional<Row> {
    std::vector<int> cols;
    for (int i = 0; i < kN; ++i) {
      if (mask & (1 << i)) cols.push_back(i);
    }
    const int n = static_cast<int>(cols.size());
    std::vector<std::vector<double>> m(n, std::vector<double>(n + 1, 0.0));
    for (const auto& [r, t] : rows) {
      for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) m[a][b] += r[cols[a]] / scale[cols[a]] * r[cols[b]] / scale[cols[b]];
        m[a][n] += r[cols[a]] / scale[cols[a]] * t;
      }
    }
    for (int c = 0; c < n; ++c) {
      int pivot = c;
      for (int k = c + 1; k < n; ++k) {
        if (std::abs(m[k][c]) > std::abs(m[pivot][c])) pivot = k;
      }
      if (std::abs(m[pivot][c]) < 1e-12 * static_cast<double>(rows.size())) return std::nullopt;
      std::swap(m[c], m[pivot]);
      for (int k = 0; k < n; ++k) {
        if (k == c) continue;
        const double f = m[k][c] / m[c][c];
        for (int j = c; j <= n; ++j) m[k][j] -= f * m[c][j];
      }
    }
    Row x{};
    for (int a = 0; a < n; ++a) x[cols[a]] = m[a][n] / m[a][a] / scale[cols[a]];
    return x;
  };
  std::optional<Row> best;
  double best_sse = std::numeric_limits<double>::infinity();
  bool full_rank = false;
  for (int mask = allowed; mask >= 1; --mask) {
    if ((mask & allowed) != mask) continue;
    const std::optional<Row> x = solve(mask);
    if (mask == allowed) full_rank = x.has_value();
    if (!x || std::any_of(x->begin(), x->end(), [](double v) { return v < 0; })) continue;
    double sse = 0;
    for (const auto& [r, t] : rows) {
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
  return *best;
}

}  // namespace

absl::StatusOr<StepCostModel> StepCostModel::Fit(const std::vector<std::pair<StepShape, double>>& samples) {
  if (samples.size() < 4) return absl::InvalidArgumentError("fitting 4 coefficients needs at least 4 samples");
  ASSIGN_OR_RETURN(const Row x, NonNegativeFit(samples, 0b1111, /*relative=*/false));
  return StepCostModel{x[0], x[1], x[2], x[3]};
}

absl::StatusOr<StepCostModel> StepCostModel::FitDecode(const std::vector<std::pair<StepShape, double>>& samples) {
  std::vector<std::pair<StepShape, double>> decode;
  for (const auto& [s, t] : samples) {
    if (s.new_tokens == s.seqs) decode.emplace_back(s, t);
  }
  if (decode.size() < 3) return absl::InvalidArgumentError("fitting a decode step needs at least 3 decode samples");
  ASSIGN_OR_RETURN(const Row x, NonNegativeFit(decode, 0b1101, /*relative=*/true));  // base, attention, sequences
  return StepCostModel{x[0], 0, x[2], x[3]};
}

nlohmann::json StepCostModel::ToJson() const {
  nlohmann::json j = {{"base_s", base_s}, {"per_token_s", per_token_s}, {"per_attention_s", per_attention_s},
                      {"per_seq_s", per_seq_s}};
  if (!token_curve.empty()) {
    j["token_curve"] = nlohmann::json::array();
    for (const auto& [n, t] : token_curve) j["token_curve"].push_back({n, t});
  }
  return j;
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
  if (j.contains("token_curve")) {
    const nlohmann::json& c = j["token_curve"];
    if (!c.is_array() || c.size() < 2) return absl::InvalidArgumentError("step cost model: token_curve needs 2+ points");
    for (const nlohmann::json& p : c) {
      if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !p[1].is_number()) {
        return absl::InvalidArgumentError("step cost model: a token_curve point is not [tokens, seconds]");
      }
      const double n = p[0].get<double>(), t = p[1].get<double>();
      if (!(n >= 0 && t >= 0) || (!m.token_curve.empty() && !(n > m.token_curve.back().first))) {
        return absl::InvalidArgumentError(
            "step cost model: token_curve's tokens must increase and its points be >= 0");
      }
      m.token_curve.emplace_back(n, t);
    }
  }
  return m;
}

}  // namespace tandem::sim
