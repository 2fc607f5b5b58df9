#include "tools/tandem/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/kernels/int8_matmul.h"
#include "engine/kernels/ops.h"

namespace tandem::cli {
namespace {

constexpr const char* kAttnLinears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"};
constexpr const char* kMlpLinears[] = {"mlp.gate_proj", "mlp.up_proj"};
constexpr const char* kAllLinears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};

void UpdateMax(std::vector<float>& m, const float* x, int64_t rows, int64_t cols) {
  if (m.size() != static_cast<size_t>(cols)) m.assign(static_cast<size_t>(cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) m[c] = std::max(m[c], std::fabs(row[c]));
  }
}

std::vector<float> RowToFloat(const TensorView& t, int64_t row, int64_t cols) {
  std::vector<float> v(static_cast<size_t>(cols));
  kernels::ConvertToFloat(t.dtype, static_cast<const uint8_t*>(t.data) + row * cols * DTypeSize(t.dtype), cols,
                          v.data());
  return v;
}

template <typename T>
std::string AsBytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A linear weight [out, in] with its columns multiplied by `s` (or not, when
// empty), quantized per row: the int8 weight and its [out, 1] scales.
void QuantizeLinear(const TensorView& w, const std::vector<float>& s, std::vector<TensorToWrite>& out,
                    const std::string& module) {
  const int64_t rows = w.shape[0], cols = w.shape[1];
  std::vector<int8_t> q(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> row = RowToFloat(w, r, cols);
    if (!s.empty()) {
      for (int64_t c = 0; c < cols; ++c) row[c] *= s[c];
    }
    scales[r] = kernels::QuantizeRowInt8(row.data(), cols, q.data() + r * cols);
  }
  out.push_back({module + ".weight", DType::kI8, {rows, cols}, AsBytes(q)});
  out.push_back({module + ".weight_scale", DType::kF32, {rows, 1}, AsBytes(scales)});
}

}  // namespace

ActivationMaxima::ActivationMaxima(const ModelConfig& config)
    : layers_(static_cast<size_t>(config.num_hidden_layers)) {}

void ActivationMaxima::OnLinearInput(int64_t layer, Site site, const float* x, int64_t rows, int64_t cols) {
  LayerMaxima& l = layers_[layer];
  switch (site) {
    case Site::kQkvInput:
      UpdateMax(l.qkv, x, rows, cols);
      if (layer == 0) tokens_ += rows;
      break;
    case Site::kOInput:
      UpdateMax(l.o, x, rows, cols);
      break;
    case Site::kGateUpInput:
      UpdateMax(l.gate_up, x, rows, cols);
      break;
    case Site::kDownInput:
      UpdateMax(l.down, x, rows, cols);
      break;
  }
}

nlohmann::json ActivationMaxima::ToJson() const {
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerMaxima& l : layers_) {
    layers.push_back({{"qkv", l.qkv}, {"o", l.o}, {"gate_up", l.gate_up}, {"down", l.down}});
  }
  return {{"tokens", tokens_}, {"layers", layers}};
}

std::vector<float> SmoothingFactors(const std::vector<float>& act_max, const std::vector<const TensorView*>& weights,
                                    double alpha) {
  const int64_t cols = static_cast<int64_t>(act_max.size());
  std::vector<float> w_max(static_cast<size_t>(cols), 0.0f);
  for (const TensorView* w : weights) {
    for (int64_t r = 0; r < w->shape[0]; ++r) {
      const std::vector<float> row = RowToFloat(*w, r, cols);
      for (int64_t c = 0; c < cols; ++c) w_max[c] = std::max(w_max[c], std::fabs(row[c]));
    }
  }
  std::vector<float> s(static_cast<size_t>(cols), 1.0f);
  for (int64_t c = 0; c < cols; ++c) {
    if (!(act_max[c] > 0.0f) || !(w_max[c] > 0.0f)) continue;
    const double v = std::pow(static_cast<double>(act_max[c]), alpha) /
                     std::pow(static_cast<double>(w_max[c]), 1.0 - alpha);
    s[c] = static_cast<float>(std::clamp(v, 1e-5, 1e5));
  }
  return s;
}

absl::StatusOr<std::vector<TensorToWrite>> BuildW8A8Checkpoint(const ModelConfig& c, const WeightStore& store,
                                                               const std::vector<LayerMaxima>* maxima, double alpha,
                                                               std::vector<LayerSmoothing>* smoothing_out) {
  if (maxima != nullptr && static_cast<int64_t>(maxima->size()) != c.num_hidden_layers) {
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

  std::map<std::string, TensorToWrite> replaced;
  std::vector<LayerSmoothing> smoothing(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    std::map<std::string, TensorView> w;
    for (const char* m : kAllLinears) {
      ASSIGN_OR_RETURN(w[m], get_float(p + m + ".weight", shapes.at(m)));
    }
    LayerSmoothing& sm = smoothing[i];
    if (maxima != nullptr) {
      const LayerMaxima& lm = (*maxima)[i];
      if (static_cast<int64_t>(lm.qkv.size()) != hidden || static_cast<int64_t>(lm.gate_up.size()) != hidden) {
        return absl::InvalidArgumentError("the calibration run saw no tokens");
      }
      sm.qkv = SmoothingFactors(lm.qkv, {&w[kAttnLinears[0]], &w[kAttnLinears[1]], &w[kAttnLinears[2]]}, alpha);
      sm.gate_up = SmoothingFactors(lm.gate_up, {&w[kMlpLinears[0]], &w[kMlpLinears[1]]}, alpha);
      for (const auto& [norm, s] : {std::pair{std::string("input_layernorm"), &sm.qkv},
                                    std::pair{std::string("post_attention_layernorm"), &sm.gate_up}}) {
        const std::string name = p + norm + ".weight";
        ASSIGN_OR_RETURN(TensorView n, get_float(name, {hidden}));
        std::vector<float> v = RowToFloat(n, 0, hidden);
        for (int64_t j = 0; j < hidden; ++j) v[j] /= (*s)[j];
        replaced[name] = {name, DType::kF32, {hidden}, AsBytes(v)};
      }
    }
    for (const char* m : kAllLinears) {
      const std::string mod(m);
      const std::vector<float>& s = mod.starts_with("self_attn.o") || mod.starts_with("mlp.down") ? std::vector<float>{}
                                    : mod.starts_with("self_attn.") ? sm.qkv
                                                                    : sm.gate_up;
      std::vector<TensorToWrite> q;
      QuantizeLinear(w[m], s, q, p + m);
      for (TensorToWrite& t : q) replaced[t.name] = std::move(t);
    }
  }
  // Every tensor of the store in its order; a replaced weight is followed by
  // its scale.
  std::vector<TensorToWrite> out;
  for (const std::string& name : store.Names()) {
    auto it = replaced.find(name);
    if (it != replaced.end()) {
      out.push_back(std::move(it->second));
      auto scale = replaced.find(name + "_scale");
      if (scale != replaced.end()) out.push_back(std::move(scale->second));
      continue;
    }
    ASSIGN_OR_RETURN(TensorView t, store.Find(name));
    out.push_back({name, t.dtype, t.shape, std::string(static_cast<const char*>(t.data), t.size_bytes)});
  }
  if (smoothing_out != nullptr) *smoothing_out = std::move(smoothing);
  return out;
}

nlohmann::json W8A8QuantizationConfig() {
  return {{"quant_method", "compressed-tensors"},
          {"format", "int-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}},
              {"weights",
               {{"num_bits", 8}, {"type", "int"}, {"symmetric", true}, {"strategy", "channel"}, {"dynamic", false},
                {"group_size", nullptr}}},
              {"input_activations",
               {{"num_bits", 8}, {"type", "int"}, {"symmetric", true}, {"strategy", "token"}, {"dynamic", true}}},
              {"output_activations", nullptr}}}}},
          {"ignore", {"lm_head"}}};
}

}  // namespace tandem::cli
