#include "tools/tandem/awq.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/kernels/ops.h"

namespace tandem::cli {
namespace {

using Site = ActivationObserver::Site;

constexpr const char* kSiteNames[] = {"qkv", "o", "gate_up", "down"};
constexpr const char* kAllLinears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};

template <typename T>
std::string AsBytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// The float copy of a whole [rows, cols] tensor (any float file dtype).
std::vector<float> ToFloat(const TensorView& t) {
  const int64_t n = t.shape.empty() ? 0 : t.size_bytes / static_cast<int64_t>(DTypeSize(t.dtype));
  std::vector<float> v(static_cast<size_t>(n));
  kernels::ConvertToFloat(t.dtype, static_cast<const uint8_t*>(t.data), n, v.data());
  return v;
}

// 8 nibbles per int32, value j of a run in bits 4 (j % 8) of word j / 8 (the
// pack-quantized order); values are already "signed + 8", i.e. 0..15.
int32_t PackWord(const uint8_t* v) {
  uint32_t w = 0;
  for (int i = 0; i < 8; ++i) w |= static_cast<uint32_t>(v[i] & 0x0f) << (4 * i);
  return static_cast<int32_t>(w);
}

// Quantizes fp32 weight w [rows][cols] by groups of g and appends the
// pack-quantized tensors of `module`.
void AppendPackQuantized(const std::string& module, const std::vector<float>& w, int64_t rows, int64_t cols,
                         int64_t g, std::vector<TensorToWrite>& out) {
  const int64_t groups = cols / g;
  std::vector<uint8_t> q(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(rows * groups));
  std::vector<uint8_t> zeros(static_cast<size_t>(rows * groups));
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRowInt4Rtn(w.data() + r * cols, cols, g, q.data() + r * cols, scales.data() + r * groups,
                       zeros.data() + r * groups);
  }
  // Codes: q is the unsigned code; the signed value is q - 8 and the format
  // stores signed + 8, which is q again. The same holds for the zero point.
  std::vector<int32_t> packed(static_cast<size_t>(rows * (cols / 8)));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols / 8; ++k) packed[r * (cols / 8) + k] = PackWord(q.data() + r * cols + 8 * k);
  }
  // Zero points are packed along the output dimension: word [o/8][grp]
  // holds rows 8(o/8) .. +7 of group grp. Rows past `rows` pad with signed
  // 0 (stored 8); nothing reads them.
  const int64_t zrows = (rows + 7) / 8;
  std::vector<int32_t> zp(static_cast<size_t>(zrows * groups));
  for (int64_t k = 0; k < zrows; ++k) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      uint8_t v[8];
      for (int i = 0; i < 8; ++i) {
        const int64_t r = 8 * k + i;
        v[i] = r < rows ? zeros[r * groups + grp] : uint8_t{8};
      }
      zp[k * groups + grp] = PackWord(v);
    }
  }
  const std::vector<int64_t> shape = {rows, cols};
  out.push_back({module + ".weight_packed", DType::kI32, {rows, cols / 8}, AsBytes(packed)});
  out.push_back({module + ".weight_scale", DType::kF32, {rows, groups}, AsBytes(scales)});
  out.push_back({module + ".weight_zero_point", DType::kI32, {zrows, groups}, AsBytes(zp)});
  out.push_back({module + ".weight_shape", DType::kI64, {2}, AsBytes(shape)});
}

// AWQ's clipping search for one smoothed weight w [rows][cols] whose input
// sample, in w's coordinates, is x / s_in (s_in null: x). For each row and
// group it tries shrink factors c: the group is clipped to ±c·max|w_group|
// (fp32 product) before RTN, and the error (w − deq)ᵀ Σ_b (w − deq) against
// the unclipped weights is measured with Σ_b the group's block of the
// sample's second moments (cross-group terms are ignored, as in AWQ, so each
// group decides alone). Why: RTN spends the 16 levels on the extremes; a
// slightly narrower range gives the bulk of the weights finer steps at the
// cost of a few clipped ones, and the activations say which costs more.
// Clips w in place by the chosen factors and returns them [rows][groups];
// on a tie the larger factor (less clipping) wins.
std::vector<float> ClipSearch(std::vector<float>& w, int64_t rows, int64_t cols, int64_t g, const SiteSample& x,
                              const std::vector<float>* s_in, const std::vector<double>& shrinks) {
  const int64_t groups = cols / g, n = x.n();
  std::vector<float> chosen(static_cast<size_t>(rows * groups), 1.0f);
  for (int64_t b = 0; b < groups; ++b) {
    // Σ_b in double, from the sample's rows divided by s_in.
    std::vector<double> sigma(static_cast<size_t>(g * g), 0.0);
    std::vector<double> xr(static_cast<size_t>(g));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < g; ++i) {
        const int64_t c = b * g + i;
        xr[i] = static_cast<double>(x.rows[t * cols + c]) / (s_in ? static_cast<double>((*s_in)[c]) : 1.0);
      }
      for (int64_t i = 0; i < g; ++i) {
        const double xi = xr[i];
        double* row = sigma.data() + i * g;
        for (int64_t j = 0; j < g; ++j) row[j] += xi * xr[j];
      }
    }
#pragma omp parallel
    {
      std::vector<float> clipped(static_cast<size_t>(g));
      std::vector<uint8_t> q(static_cast<size_t>(g));
      std::vector<double> e(static_cast<size_t>(g));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        float* wg = w.data() + r * cols + b * g;
        float maxabs = 0.0f;
        for (int64_t i = 0; i < g; ++i) maxabs = std::max(maxabs, std::fabs(wg[i]));
        double best = INFINITY;
        float best_c = 1.0f;
        for (double shrink : shrinks) {
          const float mv = static_cast<float>(shrink) * maxabs;
          for (int64_t i = 0; i < g; ++i) clipped[i] = std::clamp(wg[i], -mv, mv);
          float scale = 0.0f;
          uint8_t zero = 0;
          QuantizeRowInt4Rtn(clipped.data(), g, g, q.data(), &scale, &zero);
          for (int64_t i = 0; i < g; ++i) {
            const float deq = static_cast<float>(int{q[i]} - int{zero}) * scale;
            e[i] = static_cast<double>(wg[i]) - static_cast<double>(deq);
          }
          double err = 0;
          for (int64_t i = 0; i < g; ++i) {
            const double* row = sigma.data() + i * g;
            double acc = 0;
            for (int64_t j = 0; j < g; ++j) acc += row[j] * e[j];
            err += e[i] * acc;
          }
          if (err < best) {
            best = err;
            best_c = static_cast<float>(shrink);
          }
        }
        chosen[static_cast<size_t>(r * groups + b)] = best_c;
        const float mv = best_c * maxabs;
        for (int64_t i = 0; i < g; ++i) wg[i] = std::clamp(wg[i], -mv, mv);
      }
    }
  }
  return chosen;
}

}  // namespace

std::vector<float> SiteSample::MeanAbs() const {
  std::vector<float> m(abs_sum.size(), 0.0f);
  if (seen == 0) return m;
  for (size_t c = 0; c < m.size(); ++c) m[c] = static_cast<float>(abs_sum[c] / static_cast<double>(seen));
  return m;
}

ActivationSampler::ActivationSampler(const ModelConfig& config, int64_t expected_tokens, int64_t max_rows)
    : layers_(static_cast<size_t>(config.num_hidden_layers), std::vector<SiteSample>(4)) {
  // Knuth's selection sampling: each index is taken with probability
  // (still needed) / (still left), which picks exactly `want` indices,
  // uniformly, in increasing order. A fixed seed keeps runs reproducible.
  const int64_t want = std::min(max_rows, expected_tokens);
  std::mt19937_64 gen(0x4157513);
  int64_t needed = want;
  for (int64_t t = 0; t < expected_tokens && needed > 0; ++t) {
    const double u = static_cast<double>(gen() >> 11) * 0x1.0p-53;
    if (static_cast<double>(expected_tokens - t) * u < static_cast<double>(needed)) {
      chosen_.push_back(t);
      --needed;
    }
  }
}

void ActivationSampler::OnLinearInput(int64_t layer, Site site, const float* x, int64_t rows, int64_t cols) {
  SiteSample& s = layers_[layer][static_cast<size_t>(site)];
  if (s.cols == 0) {
    s.cols = cols;
    s.abs_sum.assign(static_cast<size_t>(cols), 0.0);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) s.abs_sum[c] += std::fabs(row[c]);
    const int64_t t = s.seen + r;
    // chosen_ is sorted and rows arrive in token order, so the next row to
    // keep is always chosen_[n()].
    const size_t next = static_cast<size_t>(s.n());
    if (next < chosen_.size() && chosen_[next] == t) s.rows.insert(s.rows.end(), row, row + cols);
  }
  s.seen += rows;
}

const SiteSample& ActivationSampler::sample(int64_t layer, Site site) const {
  return layers_[layer][static_cast<size_t>(site)];
}

int64_t ActivationSampler::tokens_seen() const {
  return layers_.empty() ? 0 : layers_[0][0].seen;
}

std::vector<double> DefaultAwqShrinks() {
  std::vector<double> r;
  for (int i = 0; i < 10; ++i) r.push_back(1.0 - i / 20.0);
  return r;
}

std::vector<double> DefaultAwqRatios() {
  std::vector<double> r;
  for (int i = 0; i < 20; ++i) r.push_back(i / 20.0);
  return r;
}

absl::StatusOr<int64_t> W4A16GroupSize(const ModelConfig& c, int64_t requested) {
  const int64_t widths[] = {c.hidden_size, c.num_attention_heads * c.head_dim, c.intermediate_size};
  auto divides_all = [&](int64_t g) {
    return std::all_of(std::begin(widths), std::end(widths), [g](int64_t w) { return w % g == 0; });
  };
  const std::string dims = absl::StrCat("(hidden ", widths[0], ", attention ", widths[1], ", intermediate ",
                                        widths[2], ")");
  if (requested != 0) {
    if (requested != 32 && requested != 64 && requested != 128) {
      return absl::InvalidArgumentError(absl::StrCat("--group-size ", requested, ": must be 32, 64 or 128"));
    }
    if (!divides_all(requested)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--group-size ", requested, " does not divide every linear input width ", dims));
    }
    return requested;
  }
  for (int64_t g : {128, 64, 32}) {
    if (divides_all(g)) return g;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--group-size: none of 128, 64, 32 divides every linear input width ", dims));
}

void QuantizeRowInt4Rtn(const float* w, int64_t cols, int64_t g, uint8_t* q, float* scales, uint8_t* zeros) {
  for (int64_t b = 0; b < cols / g; ++b) {
    const float* v = w + b * g;
    float lo = 0.0f, hi = 0.0f;  // 0 always in range (the rule's min(0, .) / max(0, .))
    for (int64_t i = 0; i < g; ++i) {
      lo = std::min(lo, v[i]);
      hi = std::max(hi, v[i]);
    }
    const float scale = (hi - lo) / 15.0f;
    uint8_t* qb = q + b * g;
    if (!(scale > 0.0f)) {
      scales[b] = 0.0f;
      zeros[b] = 0;
      std::fill(qb, qb + g, uint8_t{0});
      continue;
    }
    const float zero = std::clamp(std::rint(-lo / scale), 0.0f, 15.0f);
    scales[b] = scale;
    zeros[b] = static_cast<uint8_t>(zero);
    for (int64_t i = 0; i < g; ++i) {
      qb[i] = static_cast<uint8_t>(std::clamp(std::rint(v[i] / scale) + zero, 0.0f, 15.0f));
    }
  }
}

std::vector<float> AwqScales(const std::vector<float>& mean_abs, double a) {
  std::vector<double> p(mean_abs.size());
  double mx = 0, mn = INFINITY;
  for (size_t j = 0; j < p.size(); ++j) {
    p[j] = std::max(std::pow(static_cast<double>(mean_abs[j]), a), 1e-4);
    mx = std::max(mx, p[j]);
    mn = std::min(mn, p[j]);
  }
  // Normalising by the geometric middle of the range keeps W·s near W's
  // magnitude (only the ratios between channels matter to the search).
  const double norm = std::sqrt(mx * mn);
  std::vector<float> s(p.size());
  for (size_t j = 0; j < p.size(); ++j) s[j] = static_cast<float>(p[j] / norm);
  return s;
}

AwqSearch SearchAwqScales(const std::vector<const std::vector<float>*>& weights,
                          const std::vector<int64_t>& out_rows, const SiteSample& x,
                          const std::vector<float>& mean_abs, const AwqOptions& o) {
  const int64_t in = x.cols, n = x.n(), g = o.group_size;
  AwqSearch best;
  best.error = INFINITY;
  for (double a : o.ratios) {
    const std::vector<float> s = AwqScales(mean_abs, a);
    double err = 0;
    for (size_t k = 0; k < weights.size(); ++k) {
      const std::vector<float>& w = *weights[k];
      const int64_t rows = out_rows[k];
      // E = W − deq(Q(W·s)) / s, formed in double and rounded once, so the
      // fp32 product X·Eᵀ carries the error to ~1e-6 relative.
      std::vector<float> e(static_cast<size_t>(rows * in));
#pragma omp parallel
      {
        std::vector<float> ws(static_cast<size_t>(in)), scales(static_cast<size_t>(in / g));
        std::vector<uint8_t> q(static_cast<size_t>(in)), zeros(static_cast<size_t>(in / g));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
          const float* wr = w.data() + r * in;
          for (int64_t c = 0; c < in; ++c) ws[c] = wr[c] * s[c];
          QuantizeRowInt4Rtn(ws.data(), in, g, q.data(), scales.data(), zeros.data());
          for (int64_t c = 0; c < in; ++c) {
            const float deq = static_cast<float>(int{q[c]} - int{zeros[c / g]}) * scales[c / g];
            e[r * in + c] = static_cast<float>(static_cast<double>(wr[c]) -
                                               static_cast<double>(deq) / static_cast<double>(s[c]));
          }
        }
      }
      std::vector<float> y(static_cast<size_t>(n * rows));
      kernels::WeightRef ref;
      ref.dtype = DType::kF32;
      ref.data = e.data();
      ref.rows = rows;
      ref.cols = in;
      ref.row_stride = in;
      kernels::MatMul(x.rows.data(), n, ref, nullptr, y.data());
      for (float v : y) err += static_cast<double>(v) * v;
    }
    best.errors.push_back(err);
    // Strictly smaller: on a tie the smaller ratio (the milder change) wins.
    if (err < best.error) {
      best.error = err;
      best.ratio = a;
      best.s = s;
    }
  }
  return best;
}

absl::StatusOr<std::vector<TensorToWrite>> BuildW4A16Checkpoint(const ModelConfig& c, const WeightStore& store,
                                                                const ActivationSampler& sampler,
                                                                const AwqOptions& o, std::vector<LayerAwq>* results) {
  if (sampler.num_layers() != c.num_hidden_layers) {
    return absl::InvalidArgumentError("calibration statistics do not match the model's layers");
  }
  const int64_t hidden = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim, ffn = c.intermediate_size;
  const std::map<std::string, std::vector<int64_t>> shapes = {
      {"self_attn.q_proj", {q_dim, hidden}}, {"self_attn.k_proj", {kv_dim, hidden}},
      {"self_attn.v_proj", {kv_dim, hidden}}, {"self_attn.o_proj", {hidden, q_dim}},
      {"mlp.gate_proj", {ffn, hidden}},      {"mlp.up_proj", {ffn, hidden}},
      {"mlp.down_proj", {hidden, ffn}}};
  auto get_float = [&](const std::string& name, const std::vector<int64_t>& shape) -> absl::StatusOr<TensorView> {
    ASSIGN_OR_RETURN(TensorView t, store.Get(name, shape));
    if (!IsFloatDType(t.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is ", std::string(DTypeName(t.dtype)),
                                                     ": tandem quantize needs a float checkpoint"));
    }
    return t;
  };
  const int64_t g = o.group_size;
  std::map<std::string, std::vector<TensorToWrite>> replaced;  // by the source tensor's name
  std::vector<LayerAwq> found(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    std::map<std::string, std::vector<float>> w;
    for (const char* m : kAllLinears) {
      ASSIGN_OR_RETURN(TensorView t, get_float(p + m + ".weight", shapes.at(m)));
      w[m] = ToFloat(t);
    }
    for (Site site : {Site::kQkvInput, Site::kOInput, Site::kGateUpInput, Site::kDownInput}) {
      if (sampler.sample(i, site).n() == 0) return absl::InvalidArgumentError("the calibration run saw no tokens");
    }
    LayerAwq& la = found[i];
    auto search = [&](Site site, std::vector<const char*> mods) {
      std::vector<const std::vector<float>*> ws;
      std::vector<int64_t> rows;
      for (const char* m : mods) {
        ws.push_back(&w[m]);
        rows.push_back(shapes.at(m)[0]);
      }
      const SiteSample& x = sampler.sample(i, site);
      return SearchAwqScales(ws, rows, x, x.MeanAbs(), o);
    };
    la.qkv = search(Site::kQkvInput, {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"});
    if (kv_dim == q_dim) la.vo = search(Site::kOInput, {"self_attn.o_proj"});
    la.gate_up = search(Site::kGateUpInput, {"mlp.gate_proj", "mlp.up_proj"});
    la.down = search(Site::kDownInput, {"mlp.down_proj"});

    // Apply every factor (the formulas of the header), then quantize.
    auto scale_cols = [](std::vector<float>& m, int64_t cols, const std::vector<float>& s) {
      for (size_t k = 0; k < m.size(); ++k) m[k] *= s[k % cols];
    };
    auto divide_rows = [](std::vector<float>& m, int64_t cols, const std::vector<float>& s) {
      for (size_t k = 0; k < m.size(); ++k) m[k] /= s[k / cols];
    };
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) {
      scale_cols(w[m], hidden, la.qkv.s);
    }
    if (la.vo) {
      divide_rows(w["self_attn.v_proj"], hidden, la.vo->s);
      scale_cols(w["self_attn.o_proj"], q_dim, la.vo->s);
    }
    for (const char* m : {"mlp.gate_proj", "mlp.up_proj"}) scale_cols(w[m], hidden, la.gate_up.s);
    divide_rows(w["mlp.up_proj"], hidden, la.down.s);
    scale_cols(w["mlp.down_proj"], ffn, la.down.s);
    for (const auto& [norm, s] : {std::pair{std::string("input_layernorm"), &la.qkv.s},
                                  std::pair{std::string("post_attention_layernorm"), &la.gate_up.s}}) {
      const std::string name = p + norm + ".weight";
      ASSIGN_OR_RETURN(TensorView t, get_float(name, {hidden}));
      std::vector<float> v = ToFloat(t);
      for (int64_t j = 0; j < hidden; ++j) v[j] /= (*s)[j];
      replaced[name].push_back({name, DType::kF32, {hidden}, AsBytes(v)});
    }
    for (const char* m : kAllLinears) {
      const std::vector<int64_t>& sh = shapes.at(m);
      const std::string mod(m);
      // As AWQ: q and k are not clipped (their errors reach the output
      // through the softmax, which the layer-output error does not see).
      if (o.clip && mod != "self_attn.q_proj" && mod != "self_attn.k_proj") {
        const Site site = mod == "self_attn.v_proj"   ? Site::kQkvInput
                          : mod == "self_attn.o_proj" ? Site::kOInput
                          : mod == "mlp.down_proj"    ? Site::kDownInput
                                                      : Site::kGateUpInput;
        const std::vector<float>* s_in = site == Site::kQkvInput      ? &la.qkv.s
                                         : site == Site::kGateUpInput ? &la.gate_up.s
                                         : site == Site::kDownInput   ? &la.down.s
                                         : la.vo                      ? &la.vo->s
                                                                      : nullptr;
        la.clip[mod] = ClipSearch(w[m], sh[0], sh[1], g, sampler.sample(i, site), s_in, o.shrinks);
      }
      AppendPackQuantized(p + m, w[m], sh[0], sh[1], g, replaced[p + m + ".weight"]);
    }
  }
  // Every tensor of the store in its order, a replaced one by its tensors.
  std::vector<TensorToWrite> out;
  for (const std::string& name : store.Names()) {
    auto it = replaced.find(name);
    if (it != replaced.end()) {
      for (TensorToWrite& t : it->second) out.push_back(std::move(t));
      continue;
    }
    ASSIGN_OR_RETURN(TensorView t, store.Find(name));
    out.push_back({name, t.dtype, t.shape, std::string(static_cast<const char*>(t.data), t.size_bytes)});
  }
  if (results != nullptr) *results = std::move(found);
  return out;
}

nlohmann::json W4A16QuantizationConfig(int64_t group_size) {
  return {{"quant_method", "compressed-tensors"},
          {"format", "pack-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}},
              {"weights",
               {{"num_bits", 4}, {"type", "int"}, {"symmetric", false}, {"strategy", "group"}, {"dynamic", false},
                {"group_size", group_size}}},
              {"input_activations", nullptr},
              {"output_activations", nullptr}}}}},
          {"ignore", {"lm_head"}}};
}

nlohmann::json AwqStatsJson(const std::vector<LayerAwq>& results, const AwqOptions& o,
                            const ActivationSampler& sampler) {
  auto one = [](const AwqSearch& s) -> nlohmann::json {
    return {{"ratio", s.ratio}, {"error", s.error}, {"errors", s.errors}, {"s", s.s}};
  };
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerAwq& l : results) {
    layers.push_back({{"qkv", one(l.qkv)},
                      {"vo", l.vo ? one(*l.vo) : nlohmann::json(nullptr)},
                      {"gate_up", one(l.gate_up)},
                      {"down", one(l.down)},
                      {"clip", l.clip.empty() ? nlohmann::json(nullptr) : nlohmann::json(l.clip)}});
  }
  return {{"scheme", "w4a16"},
          {"group_size", o.group_size},
          {"ratios", o.ratios},
          {"clip", o.clip},
          {"shrinks", o.shrinks},
          {"tokens", sampler.tokens_seen()},
          {"sample_rows", sampler.num_layers() > 0 ? sampler.sample(0, Site::kQkvInput).n() : 0},
          {"layers", layers}};
}

absl::Status WriteAwqSamples(const std::filesystem::path& path, const ActivationSampler& sampler) {
  std::vector<TensorToWrite> t;
  for (int64_t i = 0; i < sampler.num_layers(); ++i) {
    for (int site = 0; site < 4; ++site) {
      const SiteSample& s = sampler.sample(i, static_cast<Site>(site));
      const std::string p = absl::StrCat("layers.", i, ".", kSiteNames[site]);
      t.push_back({p + ".x", DType::kF32, {s.n(), s.cols}, AsBytes(s.rows)});
      t.push_back({p + ".mean_abs", DType::kF32, {s.cols}, AsBytes(s.MeanAbs())});
    }
  }
  return WriteSafetensors(path, t);
}

}  // namespace tandem::cli
