// LoadModelConfig: reads config.json (required) and generation_config.json
// (optional) of a HuggingFace Llama-family directory into a ModelConfig.
//
// Status codes: NotFound when config.json is missing; InvalidArgument for bad
// JSON (with the parser's message), an unsupported architecture or rope
// scaling type, a missing required field, a field of the wrong type, or a
// config that fails Validate(). Every message starts with the file's full path
// and names the field.
// Thread-safety: pure functions.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/json_nesting.h"
#include "common/status_macros.h"
#include "engine/model/model_config.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kSupported[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                      "Qwen2ForCausalLM"};

// One JSON file and the path its errors name.
struct Doc {
  fs::path path;
  json root;

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": field '", field, "': ", what));
  }
  absl::Status WrongType(absl::string_view field, absl::string_view expected, const json& j) const {
    std::string got = j.dump();
    if (got.size() > 60) got = got.substr(0, 57) + "...";
    return Error(field, absl::StrCat("expected ", expected, ", got ", got));
  }
  // The field, or nullptr when absent or null.
  const json* Find(const json& obj, absl::string_view field) const {
    auto it = obj.find(std::string(field));
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
};

absl::StatusOr<std::string> ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::UnavailableError(absl::StrCat(path.string(), ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<Doc> ParseDoc(const fs::path& path, std::string_view text) {
  // Error messages dump() values, which recurses once per nesting level.
  if (absl::Status s = CheckJsonNesting(text); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", s.message()));
  }
  Doc doc{path, {}};
  try {
    doc.root = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": invalid JSON: ", e.what()));
  }
  if (!doc.root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": expected a JSON object"));
  }
  return doc;
}

// An integer (an integral float such as 4096.0 is accepted too).
absl::StatusOr<int64_t> AsInt(const Doc& doc, absl::string_view field, const json& j) {
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) {
      return static_cast<int64_t>(d);
    }
  }
  return doc.WrongType(field, "an integer", j);
}

absl::Status GetInt(const Doc& doc, const json& obj, absl::string_view field, bool required,
                    int64_t* out) {
  const json* j = doc.Find(obj, field);
  if (j == nullptr) {
    return required ? doc.Error(field, "missing (required)") : absl::OkStatus();
  }
  ASSIGN_OR_RETURN(*out, AsInt(doc, field, *j));
  return absl::OkStatus();
}

template <typename T>
absl::Status GetIntAs(const Doc& doc, const json& obj, absl::string_view field, T* out) {
  int64_t v = *out;
  RETURN_IF_ERROR(GetInt(doc, obj, field, /*required=*/false, &v));
  if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
    return doc.Error(field, absl::StrCat(v, " is out of range"));
  }
  *out = static_cast<T>(v);
  return absl::OkStatus();
}

absl::Status GetDouble(const Doc& doc, const json& obj, absl::string_view field, bool required,
                       double* out) {
  const json* j = doc.Find(obj, field);
  if (j == nullptr) {
    return required ? doc.Error(field, "missing (required)") : absl::OkStatus();
  }
  if (!j->is_number()) return doc.WrongType(field, "a number", *j);
  *out = j->get<double>();
  return absl::OkStatus();
}

absl::Status GetBool(const Doc& doc, const json& obj, absl::string_view field, bool* out) {
  const json* j = doc.Find(obj, field);
  if (j == nullptr) return absl::OkStatus();
  if (!j->is_boolean()) return doc.WrongType(field, "true or false", *j);
  *out = j->get<bool>();
  return absl::OkStatus();
}

// A token id field: an int, a list of ints, or null. Appends ids not yet in `ids`.
absl::Status AppendTokenIds(const Doc& doc, absl::string_view field, std::vector<int32_t>* ids) {
  const json* j = doc.Find(doc.root, field);
  if (j == nullptr) return absl::OkStatus();
  std::vector<const json*> items;
  if (j->is_array()) {
    for (const json& item : *j) items.push_back(&item);
  } else {
    items.push_back(j);
  }
  for (const json* item : items) {
    if (!item->is_number_integer() || item->get<int64_t>() < 0 ||
        item->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return doc.WrongType(field, "a non-negative token id, a list of them, or null", *j);
    }
    const auto id = static_cast<int32_t>(item->get<int64_t>());
    if (std::find(ids->begin(), ids->end(), id) == ids->end()) ids->push_back(id);
  }
  return absl::OkStatus();
}

absl::Status ParseArchitecture(const Doc& doc, ModelConfig* config) {
  const json* archs = doc.Find(doc.root, "architectures");
  if (archs == nullptr) return doc.Error("architectures", "missing (required)");
  if (!archs->is_array() || archs->empty()) {
    return doc.WrongType("architectures", "a non-empty list of names", *archs);
  }
  std::vector<std::string> names;
  for (const json& a : *archs) {
    if (!a.is_string()) return doc.WrongType("architectures", "a list of names", *archs);
    names.push_back(a.get<std::string>());
    for (const char* supported : kSupported) {
      if (names.back() == supported) {
        config->architecture = supported;
        return absl::OkStatus();
      }
    }
  }
  return doc.Error("architectures",
                   absl::StrCat("unsupported architecture '", absl::StrJoin(names, "', '"),
                                "' (supported: ", absl::StrJoin(kSupported, ", "), ")"));
}

absl::Status ParseRopeScaling(const Doc& doc, RopeScaling* rope) {
  const json* rs = doc.Find(doc.root, "rope_scaling");
  if (rs == nullptr) return absl::OkStatus();
  if (!rs->is_object()) return doc.WrongType("rope_scaling", "an object or null", *rs);
  std::string type_field = "rope_scaling.rope_type";
  const json* type = doc.Find(*rs, "rope_type");
  if (type == nullptr) {
    type_field = "rope_scaling.type";
    type = doc.Find(*rs, "type");
  }
  if (type == nullptr) return doc.Error("rope_scaling.rope_type", "missing (nor 'type')");
  if (!type->is_string()) return doc.WrongType(type_field, "a string", *type);
  const std::string& name = type->get_ref<const std::string&>();
  if (name == "default") return absl::OkStatus();  // HF's spelling of "no scaling"
  if (name == "linear") {
    rope->type = RopeScalingType::kLinear;
  } else if (name == "llama3") {
    rope->type = RopeScalingType::kLlama3;
  } else {
    return doc.Error(type_field,
                     absl::StrCat("unsupported rope_scaling type '", name,
                                  "' (supported: linear, llama3)"));
  }
  RETURN_IF_ERROR(GetDouble(doc, *rs, "factor", /*required=*/true, &rope->factor));
  if (rope->type == RopeScalingType::kLlama3) {
    RETURN_IF_ERROR(
        GetDouble(doc, *rs, "low_freq_factor", /*required=*/true, &rope->low_freq_factor));
    RETURN_IF_ERROR(
        GetDouble(doc, *rs, "high_freq_factor", /*required=*/true, &rope->high_freq_factor));
    RETURN_IF_ERROR(GetInt(doc, *rs, "original_max_position_embeddings", /*required=*/true,
                           &rope->original_max_position_embeddings));
  }
  return absl::OkStatus();
}

absl::Status ParseConfig(const Doc& doc, ModelConfig* c) {
  const json& r = doc.root;
  RETURN_IF_ERROR(ParseArchitecture(doc, c));
  if (const json* act = doc.Find(r, "hidden_act"); act != nullptr && *act != "silu") {
    return doc.WrongType("hidden_act", "\"silu\"", *act);
  }
  RETURN_IF_ERROR(GetInt(doc, r, "vocab_size", /*required=*/true, &c->vocab_size));
  RETURN_IF_ERROR(GetInt(doc, r, "hidden_size", /*required=*/true, &c->hidden_size));
  RETURN_IF_ERROR(GetInt(doc, r, "intermediate_size", /*required=*/true, &c->intermediate_size));
  RETURN_IF_ERROR(GetInt(doc, r, "num_hidden_layers", /*required=*/true, &c->num_hidden_layers));
  RETURN_IF_ERROR(
      GetInt(doc, r, "num_attention_heads", /*required=*/true, &c->num_attention_heads));
  if (c->num_attention_heads <= 0) return doc.Error("num_attention_heads", "must be positive");
  c->num_key_value_heads = c->num_attention_heads;
  RETURN_IF_ERROR(
      GetInt(doc, r, "num_key_value_heads", /*required=*/false, &c->num_key_value_heads));
  if (doc.Find(r, "head_dim") != nullptr) {
    RETURN_IF_ERROR(GetInt(doc, r, "head_dim", /*required=*/false, &c->head_dim));
  } else if (c->hidden_size % c->num_attention_heads != 0) {
    return doc.Error("head_dim", absl::StrCat("absent, and hidden_size ", c->hidden_size,
                                              " is not divisible by num_attention_heads ",
                                              c->num_attention_heads));
  } else {
    c->head_dim = c->hidden_size / c->num_attention_heads;
  }
  RETURN_IF_ERROR(GetDouble(doc, r, "rms_norm_eps", /*required=*/false, &c->rms_norm_eps));
  RETURN_IF_ERROR(GetDouble(doc, r, "rope_theta", /*required=*/false, &c->rope_theta));
  RETURN_IF_ERROR(ParseRopeScaling(doc, &c->rope_scaling));
  RETURN_IF_ERROR(GetInt(doc, r, "max_position_embeddings", /*required=*/false,
                         &c->max_position_embeddings));
  RETURN_IF_ERROR(GetBool(doc, r, "tie_word_embeddings", &c->tie_word_embeddings));
  // Biases and windows follow each architecture's HF modelling code.
  if (c->architecture == "Qwen2ForCausalLM") {
    c->attention_bias = true;  // Qwen2's q/k/v projections always carry a bias
    bool use_sliding_window = false;
    RETURN_IF_ERROR(GetBool(doc, r, "use_sliding_window", &use_sliding_window));
    if (use_sliding_window) {
      return doc.Error("use_sliding_window", "true is not supported (per-layer windows)");
    }
  } else if (c->architecture == "LlamaForCausalLM") {
    RETURN_IF_ERROR(GetBool(doc, r, "attention_bias", &c->attention_bias));
    c->o_proj_bias = c->attention_bias;
    RETURN_IF_ERROR(GetBool(doc, r, "mlp_bias", &c->mlp_bias));
  } else {  // MistralForCausalLM: no biases; optional sliding window
    RETURN_IF_ERROR(GetInt(doc, r, "sliding_window", /*required=*/false, &c->sliding_window));
    if (c->sliding_window < 0) return doc.Error("sliding_window", "must be positive or null");
  }
  RETURN_IF_ERROR(AppendTokenIds(doc, "bos_token_id", &c->bos_token_ids));
  RETURN_IF_ERROR(AppendTokenIds(doc, "eos_token_id", &c->eos_token_ids));
  return absl::OkStatus();
}

absl::Status ParseGenerationConfig(const Doc& doc, ModelConfig* c) {
  const json& r = doc.root;
  if (c->bos_token_ids.empty()) {
    RETURN_IF_ERROR(AppendTokenIds(doc, "bos_token_id", &c->bos_token_ids));
  }
  RETURN_IF_ERROR(AppendTokenIds(doc, "eos_token_id", &c->eos_token_ids));
  ModelConfig::GenerationDefaults& g = c->generation;
  RETURN_IF_ERROR(GetDouble(doc, r, "temperature", /*required=*/false, &g.temperature));
  RETURN_IF_ERROR(GetDouble(doc, r, "top_p", /*required=*/false, &g.top_p));
  RETURN_IF_ERROR(GetIntAs(doc, r, "top_k", &g.top_k));
  RETURN_IF_ERROR(
      GetDouble(doc, r, "repetition_penalty", /*required=*/false, &g.repetition_penalty));
  RETURN_IF_ERROR(GetBool(doc, r, "do_sample", &g.do_sample));
  return absl::OkStatus();
}

absl::Status Positive(absl::string_view field, double value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("field '", field, "': must be positive, got ", value));
}

// The generation_config.json part of ModelConfig::Validate().
absl::Status ValidateGeneration(const ModelConfig::GenerationDefaults& g) {
  if (g.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("field 'temperature': must be non-negative, got ", g.temperature));
  }
  if (!(g.top_p > 0 && g.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("field 'top_p': must be in (0, 1], got ", g.top_p));
  }
  if (g.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("field 'top_k': must be non-negative, got ", g.top_k));
  }
  return Positive("repetition_penalty", g.repetition_penalty);
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  if (architecture.empty()) {
    return absl::InvalidArgumentError("field 'architectures': no supported architecture");
  }
  RETURN_IF_ERROR(Positive("vocab_size", vocab_size));
  RETURN_IF_ERROR(Positive("hidden_size", hidden_size));
  RETURN_IF_ERROR(Positive("intermediate_size", intermediate_size));
  RETURN_IF_ERROR(Positive("num_hidden_layers", num_hidden_layers));
  RETURN_IF_ERROR(Positive("num_attention_heads", num_attention_heads));
  RETURN_IF_ERROR(Positive("num_key_value_heads", num_key_value_heads));
  RETURN_IF_ERROR(Positive("head_dim", head_dim));
  if (num_attention_heads % num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field 'num_key_value_heads': num_attention_heads ", num_attention_heads,
        " is not a multiple of num_key_value_heads ", num_key_value_heads));
  }
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("field 'head_dim': RoPE needs an even head_dim, got ", head_dim));
  }
  RETURN_IF_ERROR(Positive("rms_norm_eps", rms_norm_eps));
  RETURN_IF_ERROR(Positive("rope_theta", rope_theta));
  RETURN_IF_ERROR(Positive("max_position_embeddings", max_position_embeddings));
  if (rope_scaling.type != RopeScalingType::kNone) {
    RETURN_IF_ERROR(Positive("rope_scaling.factor", rope_scaling.factor));
  }
  if (rope_scaling.type == RopeScalingType::kLlama3) {
    RETURN_IF_ERROR(Positive("rope_scaling.low_freq_factor", rope_scaling.low_freq_factor));
    RETURN_IF_ERROR(Positive("rope_scaling.original_max_position_embeddings",
                             rope_scaling.original_max_position_embeddings));
    if (!(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "field 'rope_scaling.high_freq_factor': must exceed low_freq_factor (",
          rope_scaling.high_freq_factor, " <= ", rope_scaling.low_freq_factor, ")"));
    }
  }
  return ValidateGeneration(generation);
}

absl::StatusOr<ModelConfig> LoadModelConfig(const fs::path& dir) {
  const fs::path config_path = dir / "config.json";
  std::error_code ec;
  if (!fs::is_regular_file(config_path, ec)) {
    return absl::NotFoundError(absl::StrCat(config_path.string(), ": not found"));
  }
  ASSIGN_OR_RETURN(std::string config_text, ReadText(config_path));
  std::optional<std::string> generation_text;
  if (const fs::path gen_path = dir / "generation_config.json"; fs::is_regular_file(gen_path, ec)) {
    ASSIGN_OR_RETURN(generation_text, ReadText(gen_path));
  }
  return ParseModelConfig(config_text, generation_text, dir);
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view config_json,
                                             std::optional<std::string_view> generation_config_json,
                                             const fs::path& dir) {
  const fs::path config_path = dir / "config.json";
  ModelConfig config;
  ASSIGN_OR_RETURN(Doc doc, ParseDoc(config_path, config_json));
  RETURN_IF_ERROR(ParseConfig(doc, &config));

  if (generation_config_json.has_value()) {
    const fs::path gen_path = dir / "generation_config.json";
    ASSIGN_OR_RETURN(Doc gen, ParseDoc(gen_path, *generation_config_json));
    RETURN_IF_ERROR(ParseGenerationConfig(gen, &config));
    if (absl::Status s = ValidateGeneration(config.generation); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(gen_path.string(), ": ", s.message()));
    }
  }
  if (absl::Status s = config.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": ", s.message()));
  }
  return config;
}

}  // namespace tandem
