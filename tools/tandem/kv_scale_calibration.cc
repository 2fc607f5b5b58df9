#include "tools/tandem/kv_scale_calibration.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/dtype.h"

namespace tandem::cli {

KvMaxima::KvMaxima(const ModelConfig& config)
    : head_dim_(config.head_dim),
      k_(static_cast<size_t>(config.num_hidden_layers), std::vector<float>(config.num_key_value_heads, 0.0f)),
      v_(k_) {}

void KvMaxima::OnKvWritten(int64_t layer, const float* k, const float* v, int64_t rows, int64_t kv_dim) {
  std::vector<float>& km = k_[layer];
  std::vector<float>& vm = v_[layer];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < kv_dim; ++c) {
      const int64_t head = c / head_dim_;
      km[head] = std::max(km[head], std::fabs(k[r * kv_dim + c]));
      vm[head] = std::max(vm[head], std::fabs(v[r * kv_dim + c]));
    }
  }
}

nlohmann::json KvMaxima::ToJson() const { return {{"k_max", k_}, {"v_max", v_}}; }

void ObserverPair::OnLinearInput(int64_t layer, Site site, const float* x, int64_t rows, int64_t cols) {
  a_->OnLinearInput(layer, site, x, rows, cols);
  b_->OnLinearInput(layer, site, x, rows, cols);
}

void ObserverPair::OnKvWritten(int64_t layer, const float* k, const float* v, int64_t rows, int64_t kv_dim) {
  a_->OnKvWritten(layer, k, v, rows, kv_dim);
  b_->OnKvWritten(layer, k, v, rows, kv_dim);
}

std::vector<TensorToWrite> KvScaleTensors(const KvMaxima& maxima) {
  std::vector<TensorToWrite> out;
  auto scales = [](const std::vector<float>& m) {
    std::vector<float> s(m.size());
    for (size_t h = 0; h < m.size(); ++h) s[h] = m[h] > 0.0f ? m[h] / kE4M3Max : 1.0f;
    return std::string(reinterpret_cast<const char*>(s.data()), s.size() * sizeof(float));
  };
  for (size_t layer = 0; layer < maxima.k().size(); ++layer) {
    const std::string p = absl::StrCat("model.layers.", layer, ".self_attn.");
    const int64_t heads = static_cast<int64_t>(maxima.k()[layer].size());
    out.push_back({p + "k_scale", DType::kF32, {heads}, scales(maxima.k()[layer])});
    out.push_back({p + "v_scale", DType::kF32, {heads}, scales(maxima.v()[layer])});
  }
  return out;
}

nlohmann::json KvCacheScheme() {
  return {{"num_bits", 8}, {"type", "float"}, {"symmetric", true}, {"dynamic", false}, {"strategy", "attn_head"}};
}

}  // namespace tandem::cli
