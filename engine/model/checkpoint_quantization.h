// How a pre-quantized checkpoint stores its linear layers: config.json's
// `quantization_config`, read into what the weight loader needs.
//
// Recognised producers and layouts (their public descriptions):
//   - compressed-tensors (vLLM / llm-compressor), one config group:
//       "int-quantized"   int8 weights (`weight` I8 [out, in]) with
//                         `weight_scale` per output channel or per tensor,
//                         symmetric; usually with dynamic per-token int8
//                         activations (W8A8);
//       "float-quantized" FP8 E4M3 weights (`weight` F8_E4M3) with
//                         `weight_scale` per channel or per tensor;
//       "pack-quantized"  4-bit weights, eight per int32 along the input
//                         dimension (`weight_packed`, `weight_shape`),
//                         `weight_scale` per group, `weight_zero_point`
//                         packed likewise when asymmetric;
//   - AutoAWQ ("awq", GEMM version) and AutoGPTQ ("gptq"): 4-bit
//     `qweight` / `qzeros` / `scales` (+ GPTQ's `g_idx`), group-wise.
// Which of these the loader can load today is its business
// (quantized_linear.h); this file only parses and validates the config,
// so a checkpoint's description and its errors are the same everywhere.
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem {

enum class CheckpointScheme : uint8_t {
  kNone,          // no quantization_config: float weights
  kInt8,          // compressed-tensors int-quantized, 8-bit symmetric
  kFp8,           // compressed-tensors float-quantized, FP8 E4M3
  kInt4Packed,    // compressed-tensors pack-quantized, 4-bit
  kAwq,           // AutoAWQ GEMM, 4-bit
  kGptq,          // AutoGPTQ, 4-bit
};

enum class ScaleStrategy : uint8_t { kTensor, kChannel, kGroup };

struct CheckpointQuantization {
  CheckpointScheme scheme = CheckpointScheme::kNone;
  ScaleStrategy strategy = ScaleStrategy::kChannel;
  int64_t bits = 0;
  int64_t group_size = 0;      // kGroup only
  bool symmetric = true;
  // compressed-tensors: the input activations are quantized too (W8A8);
  // Tandem quantizes them dynamically per token whatever the file says
  // (a static input_scale is not used).
  bool quantized_activations = false;
  bool gptq_act_order = false;  // GPTQ desc_act: g_idx reorders the groups
  // Module names left in float (exact names, or "re:" + a regular
  // expression matched against the whole name), as compressed-tensors'
  // `ignore` and AWQ's `modules_to_not_convert` list them.
  std::vector<std::string> ignore;
  // Module-name targets of the config group: "Linear" (every linear layer)
  // or "re:" patterns. Empty for AWQ / GPTQ (every decoder linear layer).
  std::vector<std::string> targets;

  bool quantized() const { return scheme != CheckpointScheme::kNone; }
  // Whether the linear module `name` (e.g. "model.layers.0.mlp.up_proj",
  // "lm_head") is stored quantized: targeted and not ignored. AWQ/GPTQ
  // quantize the decoder layers only.
  bool QuantizesModule(std::string_view name) const;
  // One line for logs and errors, e.g. "compressed-tensors int8 W8A8
  // (per-channel weights, dynamic per-token activations)".
  std::string Describe() const;
};

// Parses the quantization_config of config.json's text. No field: kNone.
// InvalidArgument names the file and the field for malformed or unsupported
// configs (unknown quant_method or format, several config groups, bit
// widths or strategies the formats above do not have, bad regexes).
absl::StatusOr<CheckpointQuantization> ParseCheckpointQuantization(std::string_view config_json,
                                                                   const std::filesystem::path& file = {});

// ParseCheckpointQuantization of `dir/config.json`.
absl::StatusOr<CheckpointQuantization> LoadCheckpointQuantization(const std::filesystem::path& dir);

}  // namespace tandem
