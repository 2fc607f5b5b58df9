// SmoothQuant W8A8 (Xiao et al., 2023) for `tandem quantize`: calibration
// statistics, the per-channel smoothing factors, and the compressed-tensors
// int8 checkpoint they give.
//
// Activation outliers live in a few input channels; int8 per-token
// activations round everything else to few levels. SmoothQuant divides
// channel j of a linear layer's input by s_j and multiplies the weights'
// column j by s_j (the product is unchanged), moving the difficulty from the
// activations into the weights:
//   s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)
// where max|X_j| is channel j's largest magnitude over the calibration text
// and max|W_j| column j's over every layer reading that input. The division
// folds into the RMSNorm weight before the layer, so it costs nothing at run
// time: input_layernorm smooths q/k/v, post_attention_layernorm gate/up.
// (o_proj and down_proj read no norm's output and stay unsmoothed, as in
// the paper's Llama recipe.) A channel with no activation or no weight keeps
// s_j = 1; factors are clamped to [1e-5, 1e5].
// Every linear layer is then quantized per output row by the rule of
// kernels::QuantizeRowInt8 and written with its scale as compressed-tensors'
// int-quantized layout; the activations are quantized per token at run time.
// Thread-safety: ActivationMaxima is not thread-safe (Forward calls it on one
// thread per rank; calibrate with one rank); the rest are pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/llama_model.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"
#include "engine/model/safetensors_writer.h"
#include "nlohmann/json.hpp"

namespace tandem::cli {

// Per-channel max|x| of each decoder layer's four linear-layer inputs.
struct LayerMaxima {
  std::vector<float> qkv, o, gate_up, down;
};

class ActivationMaxima : public ActivationObserver {
 public:
  explicit ActivationMaxima(const ModelConfig& config);
  void OnLinearInput(int64_t layer, Site site, const float* x, int64_t rows, int64_t cols) override;
  const std::vector<LayerMaxima>& layers() const { return layers_; }
  int64_t tokens_seen() const { return tokens_; }
  nlohmann::json ToJson() const;

 private:
  std::vector<LayerMaxima> layers_;
  int64_t tokens_ = 0;
};

// The smoothing factors of one layer's two smoothed inputs.
struct LayerSmoothing {
  std::vector<float> qkv, gate_up;
};

// s_j as above from the activation maxima and the weights read as fp32.
// `weights`: the columns' max|W_j| is taken over all of them (e.g. q, k, v).
std::vector<float> SmoothingFactors(const std::vector<float>& act_max,
                                    const std::vector<const TensorView*>& weights, double alpha);

// The tensors of the W8A8 checkpoint: every tensor of `store` in order,
// with the decoder layers' seven linear weights replaced by int8 `weight`
// + F32 `weight_scale` [out, 1] and the two norms per layer by their
// smoothed F32 values (alpha 0 ... 1; `smoothing` nullptr: not smoothed).
// Fills `smoothing_out` (may be null) with the factors used.
absl::StatusOr<std::vector<TensorToWrite>> BuildW8A8Checkpoint(const ModelConfig& config, const WeightStore& store,
                                                               const std::vector<LayerMaxima>* maxima, double alpha,
                                                               std::vector<LayerSmoothing>* smoothing_out);

// The quantization_config a W8A8 compressed-tensors checkpoint carries.
nlohmann::json W8A8QuantizationConfig();

}  // namespace tandem::cli
