// The model's shape and generation defaults, read from a HuggingFace
// directory's `config.json` and `generation_config.json`.
//
// Supported architectures: LlamaForCausalLM, MistralForCausalLM,
// Qwen2ForCausalLM (all the Llama family: RMSNorm, RoPE, GQA, SwiGLU).
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem {

enum class RopeScalingType { kNone, kLinear, kLlama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  // llama3 only:
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2: always)
  bool o_proj_bias = false;     // o_proj carries a bias (Llama with attention_bias)
  bool mlp_bias = false;        // gate/up/down carry biases (Llama's mlp_bias)
  int64_t sliding_window = 0;   // Mistral: attend to the last N positions only; 0 = full
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;  // union of config.json and generation_config.json

  // generation_config.json defaults (absent fields keep these values).
  struct GenerationDefaults {
    double temperature = 1.0;
    double top_p = 1.0;
    int32_t top_k = 0;
    double repetition_penalty = 1.0;
    bool do_sample = false;
  } generation;

  // Checks internal consistency (positive sizes, heads divisible, ...).
  absl::Status Validate() const;
};

// Reads `dir/config.json` (required) and `dir/generation_config.json`
// (optional). Errors name the file and the field.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& dir);

// LoadModelConfig on the files' texts: `config_json` is config.json's,
// `generation_config_json` generation_config.json's (nullopt when absent).
// `dir` only names the files in messages. Same errors, bar NotFound.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view config_json,
                                             std::optional<std::string_view> generation_config_json,
                                             const std::filesystem::path& dir = {});

}  // namespace tandem
