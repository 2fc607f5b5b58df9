// Activation-aware int4 weights (AWQ's idea, Lin et al., 2024) for
// `tandem quantize --scheme w4a16`: calibration samples, the per-channel
// scale search, and the compressed-tensors pack-quantized checkpoint.
//
// Why activation-aware: int4 round-to-nearest spends the same relative
// precision on every input channel, but the channels that carry large
// activations matter more to the output. Scaling weight column j up by s_j
// (and the input channel down by 1/s_j, folded into whatever produces it)
// leaves the float layer unchanged and gives those columns relatively finer
// steps. For each smoothable group (a producer and the linear layers reading
// its output):
//   input_layernorm          -> q, k, v      (norm weight / s)
//   v_proj (rows)            -> o_proj       (only when v's output width is
//                                             o's input width: no GQA, so
//                                             each o input channel is one
//                                             v output row)
//   post_attention_layernorm -> gate, up     (norm weight / s)
//   up_proj (rows)           -> down_proj    (SwiGLU's product is linear in
//                                             up's output)
// the search tries s = m^a / sqrt(max(m^a) min(m^a)) for a in the ratio grid
// (m_j = mean |x_j| over all calibration tokens, floored at 1e-4 before
// normalising, so a silent channel cannot divide by 0; a = 0 is s = 1, plain
// RTN), quantizes W·s with the RTN rule below and keeps the a minimising
// the output error on the sample X of the group's input:
//   err(a) = sum over the group's layers of ||X Wᵀ − X (deq(Q(W·s)) / s)ᵀ||²
// (X/s · Q(W·s)ᵀ written with the 1/s moved onto the dequantized weights).
// Each search sees the float weights (the groups are searched
// independently); the factors are then applied all together.
//
// The RTN rule is the engine's (kernels/int4_matmul.h, `--quantization
// int4`) with the group size given: per group of G columns lo = min(0, min w),
// hi = max(0, max w), scale = (hi − lo) / 15, zero = clamp(rint(−lo / scale),
// 0, 15), q = clamp(rint(w / scale) + zero, 0, 15), all fp32, rint to nearest
// even; a group with scale not > 0 gets scale 0, zero 0, q 0. With the
// engine's group size for the row it gives the same bits as
// kernels::QuantizeWeightInt4 (a unit test).
//
// Thread-safety: ActivationSampler is not thread-safe (calibrate with one
// rank, as LlamaModel calls it on the thread running Forward); the rest are
// pure functions (the error uses kernels::MatMul's OpenMP team).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/llama_model.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"
#include "engine/model/safetensors_writer.h"
#include "nlohmann/json.hpp"

namespace tandem::cli {

// One linear-input site of one layer: sampled token rows and the running
// sum of |x| per channel over every token seen.
struct SiteSample {
  int64_t cols = 0;
  int64_t seen = 0;          // tokens seen (all of them, sampled or not)
  std::vector<float> rows;   // [n][cols], the sampled rows in token order
  std::vector<double> abs_sum;
  int64_t n() const { return cols > 0 ? static_cast<int64_t>(rows.size()) / cols : 0; }
  std::vector<float> MeanAbs() const;
};

// Keeps, for each layer and site, the token rows whose index (counted per
// site from the first token calibrated) is in a fixed pseudo-random subset
// of [0, expected_tokens) of size min(max_rows, expected_tokens), and
// every channel's mean |x|. Why random and not every k-th token: windows
// start every `context` tokens and a window's first token has outsized
// activations (it attends to itself only); a stride dividing the context
// would over-sample them.
class ActivationSampler : public ActivationObserver {
 public:
  ActivationSampler(const ModelConfig& config, int64_t expected_tokens, int64_t max_rows);
  void OnLinearInput(int64_t layer, Site site, const float* x, int64_t rows, int64_t cols) override;
  // site: ActivationObserver::Site as an index 0..3 (qkv, o, gate_up, down).
  const SiteSample& sample(int64_t layer, Site site) const;
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  int64_t tokens_seen() const;

 private:
  std::vector<int64_t> chosen_;  // sorted token indices to keep
  std::vector<std::vector<SiteSample>> layers_;  // [layer][site]
};

// The ratio grid {0, 0.05, ..., 0.95}.
std::vector<double> DefaultAwqRatios();
// The clipping search's factors {1, 0.95, ..., 0.55}.
std::vector<double> DefaultAwqShrinks();

struct AwqOptions {
  int64_t group_size = 128;
  std::vector<double> ratios = DefaultAwqRatios();
  // AWQ's clipping search after the scales (--clip): each group of every
  // smoothed weight but q and k is clipped to ±c·max|w_group| for the c in
  // `shrinks` minimising (w − deq)ᵀ Σ (w − deq), Σ the group's block of the
  // sample's second moments in the weight's coordinates (x / s), w the
  // unclipped weights; the group is then quantized by the rule from the
  // clipped values (clamp in fp32, bound = fp32(c) · max|w_group|). On a
  // tie the larger c wins. Off by default: on the bundled model it does not
  // help held out (docs/quantization.md).
  bool clip = false;
  std::vector<double> shrinks = DefaultAwqShrinks();
};

// One group's search: the error of every ratio, the best ratio, its factors.
struct AwqSearch {
  std::vector<double> errors;  // err(a) per ratio, as above
  double ratio = 0;
  double error = 0;            // err at `ratio`
  std::vector<float> s;        // the factors applied (size = the input width)
};

struct LayerAwq {
  AwqSearch qkv, gate_up, down;
  std::optional<AwqSearch> vo;  // absent with GQA
  // With clipping: the chosen c per module name ("mlp.up_proj", ...),
  // [rows][groups] row-major.
  std::map<std::string, std::vector<float>> clip;
};

// The group size --group-size picks: `requested` (> 0) when it is 32, 64 or
// 128 and divides every linear input width (hidden, heads x head_dim,
// intermediate); with 0, the largest of 128/64/32 that does. InvalidArgument
// naming --group-size otherwise.
absl::StatusOr<int64_t> W4A16GroupSize(const ModelConfig& config, int64_t requested);

// The RTN rule above on one row of `cols` (a multiple of g) fp32 values:
// codes q[cols], scales and zeros [cols / g].
void QuantizeRowInt4Rtn(const float* w, int64_t cols, int64_t g, uint8_t* q, float* scales, uint8_t* zeros);

// The factors of ratio a from the channels' mean |x| (see above).
std::vector<float> AwqScales(const std::vector<float>& mean_abs, double a);

// Searches one group: `weights` are its layers' fp32 weights [out_k][in]
// (out_k rows each), `x` its sample [n][in] and `mean_abs` the channels' mean
// |x|.
AwqSearch SearchAwqScales(const std::vector<const std::vector<float>*>& weights,
                          const std::vector<int64_t>& out_rows, const SiteSample& x,
                          const std::vector<float>& mean_abs, const AwqOptions& options);

// The tensors of the W4A16 checkpoint: every tensor of `store` in order, the
// decoder layers' seven linear `weight`s replaced by compressed-tensors'
// pack-quantized tensors (`weight_packed` I32 [out, in/8], `weight_scale`
// F32 [out, in/G], `weight_zero_point` I32 [ceil(out/8), in/G],
// `weight_shape` I64 [2]) of the smoothed weights, the two norms per layer
// by their smoothed F32 values. The smoothed weights, in fp32:
//   q, k, gate: W[r][c] * s[c];  v, up: (W[r][c] * s[c]) / s_next[r];
//   o, down: W[r][c] * s_next[c]  (s_next = 1 where not smoothed);
//   norms: n[c] / s[c].
// With options.clip each weight but q/k is clipped first (AwqOptions).
// Fills `results` with the searches.
absl::StatusOr<std::vector<TensorToWrite>> BuildW4A16Checkpoint(const ModelConfig& config, const WeightStore& store,
                                                                const ActivationSampler& sampler,
                                                                const AwqOptions& options,
                                                                std::vector<LayerAwq>* results);

// The quantization_config a W4A16 pack-quantized checkpoint carries.
nlohmann::json W4A16QuantizationConfig(int64_t group_size);

// The searches as JSON (for --stats-out): ratios, group size, tokens, and
// per layer and group the errors, the chosen ratio and the factors.
nlohmann::json AwqStatsJson(const std::vector<LayerAwq>& results, const AwqOptions& options,
                            const ActivationSampler& sampler);

// The samples and mean |x| as a safetensors file (for --sample-out):
// `layers.<i>.<site>.x` F32 [n, cols] and `layers.<i>.<site>.mean_abs` F32
// [cols], site in qkv, o, gate_up, down.
absl::Status WriteAwqSamples(const std::filesystem::path& path, const ActivationSampler& sampler);

}  // namespace tandem::cli
