// Calibrated FP8 KV-cache scales for `tandem quantize --kv-cache-scales`:
// the largest |K| (after RoPE) and |V| each KV head of each layer writes over
// the calibration text, turned into the static per-layer, per-head scales an
// fp8 cache uses (kv_cache_scales.h): scale = max / 448 (E4M3's largest
// finite value), so the calibration's largest value lands on the top code
// and nothing seen saturates; a head that only ever wrote zeros keeps 1.0.
// Written as `model.layers.N.self_attn.k_scale` / `.v_scale`, F32
// [num_key_value_heads], with compressed-tensors' `kv_cache_scheme`.
// Thread-safety: KvMaxima is fed by one Forward() at a time (one rank).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model/llama_model.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors_writer.h"
#include "nlohmann/json.hpp"

namespace tandem::cli {

class KvMaxima : public ActivationObserver {
 public:
  explicit KvMaxima(const ModelConfig& config);
  void OnLinearInput(int64_t, Site, const float*, int64_t, int64_t) override {}
  void OnKvWritten(int64_t layer, const float* k, const float* v, int64_t rows, int64_t kv_dim) override;
  // [layer][head] maxima of |K| and |V|.
  const std::vector<std::vector<float>>& k() const { return k_; }
  const std::vector<std::vector<float>>& v() const { return v_; }
  nlohmann::json ToJson() const;

 private:
  int64_t head_dim_;
  std::vector<std::vector<float>> k_, v_;
};

// Forwards every call to two observers (calibrating two things in one pass).
class ObserverPair : public ActivationObserver {
 public:
  ObserverPair(ActivationObserver* a, ActivationObserver* b) : a_(a), b_(b) {}
  void OnLinearInput(int64_t layer, Site site, const float* x, int64_t rows, int64_t cols) override;
  void OnKvWritten(int64_t layer, const float* k, const float* v, int64_t rows, int64_t kv_dim) override;

 private:
  ActivationObserver* a_;
  ActivationObserver* b_;
};

// The k_scale / v_scale tensors of every layer (F32 [num_key_value_heads]).
std::vector<TensorToWrite> KvScaleTensors(const KvMaxima& maxima);

// compressed-tensors' kv_cache_scheme for these scales.
nlohmann::json KvCacheScheme();

}  // namespace tandem::cli
