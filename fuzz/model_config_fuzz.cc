// Fuzz target: config.json and generation_config.json parsing
// (ParseModelConfig, the body of LoadModelConfig). Input: config.json text,
// optionally followed by a NUL and generation_config.json text.
// Asserts: no crash, exception or UB (UBSan: float-to-int casts, overflow);
// errors are InvalidArgument with a message; an accepted config passes
// Validate() and its fields are in range: positive sizes, heads divisible by
// KV heads, an even head_dim, token ids non-negative, sampling defaults in
// range (temperature >= 0, top_p in (0, 1], top_k >= 0, penalty > 0).
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "engine/model/model_config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [config_json, generation_json] = tandem::fuzz::SplitAtNul(tandem::fuzz::AsView(data, size));
  absl::StatusOr<tandem::ModelConfig> c = tandem::ParseModelConfig(config_json, generation_json, "model");
  if (!c.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(c.status()) && !c.status().message().empty(), c.status().ToString());
    return 0;
  }
  FUZZ_CHECK(c->Validate().ok(), c->Validate().ToString());
  FUZZ_CHECK(!c->architecture.empty(), "no architecture");
  FUZZ_CHECK(c->vocab_size > 0 && c->hidden_size > 0 && c->intermediate_size > 0 && c->num_hidden_layers > 0,
             "a size is not positive");
  FUZZ_CHECK(c->num_attention_heads > 0 && c->num_key_value_heads > 0 &&
                 c->num_attention_heads % c->num_key_value_heads == 0, "heads");
  FUZZ_CHECK(c->head_dim > 0 && c->head_dim % 2 == 0, "head_dim");
  FUZZ_CHECK(c->max_position_embeddings > 0 && c->sliding_window >= 0, "context");
  for (int32_t id : c->bos_token_ids) FUZZ_CHECK(id >= 0, "negative bos id");
  for (int32_t id : c->eos_token_ids) FUZZ_CHECK(id >= 0, "negative eos id");
  const auto& g = c->generation;
  FUZZ_CHECK(g.temperature >= 0 && g.top_p > 0 && g.top_p <= 1 && g.top_k >= 0 && g.repetition_penalty > 0,
             "generation defaults out of range");
  return 0;
}
