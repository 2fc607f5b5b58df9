// ParseCheckpointQuantization: config.json's quantization_config as a
// CheckpointQuantization. Field names and values follow compressed-tensors'
// QuantizationConfig / QuantizationArgs, AutoAWQ's and AutoGPTQ's configs.
#include "engine/model/checkpoint_quantization.h"

#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_nesting.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using json = nlohmann::json;

class Reader {
 public:
  explicit Reader(const std::filesystem::path& file) : file_(file.empty() ? "config.json" : file.string()) {}

  absl::Status Error(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": quantization_config", field.empty() ? "" : ".",
                                                   field, ": ", what));
  }

  // An optional string field; "" when absent or null.
  absl::StatusOr<std::string> String(const json& obj, const std::string& where, const char* field) const {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return std::string();
    if (!it->is_string()) return Error(absl::StrCat(where, field), "must be a string");
    return it->get<std::string>();
  }

  // An optional integer field; `fallback` when absent or null.
  absl::StatusOr<int64_t> Int(const json& obj, const std::string& where, const char* field, int64_t fallback) const {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_number_integer()) return Error(absl::StrCat(where, field), "must be an integer");
    return it->get<int64_t>();
  }

  absl::StatusOr<bool> Bool(const json& obj, const std::string& where, const char* field, bool fallback) const {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return Error(absl::StrCat(where, field), "must be true or false");
    return it->get<bool>();
  }

  // An optional list of module-name patterns, each checked to compile.
  absl::StatusOr<std::vector<std::string>> Patterns(const json& obj, const std::string& where,
                                                    const char* field) const {
    std::vector<std::string> out;
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return out;
    if (!it->is_array()) return Error(absl::StrCat(where, field), "must be a list of strings");
    for (const json& e : *it) {
      if (!e.is_string()) return Error(absl::StrCat(where, field), "must be a list of strings");
      std::string p = e.get<std::string>();
      if (absl::StartsWith(p, "re:")) {
        try {
          std::regex check(p.substr(3));
        } catch (const std::regex_error& err) {
          return Error(absl::StrCat(where, field), absl::StrCat("bad regular expression '", p, "': ", err.what()));
        }
      }
      out.push_back(std::move(p));
    }
    return out;
  }

 private:
  std::string file_;
};

bool MatchesPattern(const std::string& pattern, std::string_view name) {
  if (absl::StartsWith(pattern, "re:")) {
    return std::regex_match(name.begin(), name.end(), std::regex(pattern.substr(3)));
  }
  // compressed-tensors targets name a module class ("Linear") or a module;
  // every module this loader asks about is a linear layer.
  return pattern == "Linear" || pattern == name;
}

absl::StatusOr<CheckpointQuantization> ParseCompressedTensors(const Reader& r, const json& q) {
  CheckpointQuantization out;
  ASSIGN_OR_RETURN(std::string format, r.String(q, "", "format"));
  ASSIGN_OR_RETURN(out.ignore, r.Patterns(q, "", "ignore"));
  auto groups = q.find("config_groups");
  if (groups == q.end() || !groups->is_object() || groups->empty()) {
    return r.Error("config_groups", "missing or empty");
  }
  if (groups->size() != 1) {
    return r.Error("config_groups", absl::StrCat("has ", groups->size(),
                                                 " groups; Tandem loads checkpoints with one scheme for every layer"));
  }
  const std::string gname = groups->begin().key();
  const json& g = groups->begin().value();
  const std::string where = absl::StrCat("config_groups.", gname, ".");
  if (!g.is_object()) return r.Error(where, "must be an object");
  ASSIGN_OR_RETURN(out.targets, r.Patterns(g, where, "targets"));
  if (out.targets.empty()) return r.Error(absl::StrCat(where, "targets"), "missing or empty");
  ASSIGN_OR_RETURN(std::string group_format, r.String(g, where, "format"));
  if (!group_format.empty()) format = group_format;
  auto w = g.find("weights");
  if (w == g.end() || !w->is_object()) return r.Error(absl::StrCat(where, "weights"), "missing");
  const std::string ww = absl::StrCat(where, "weights.");
  ASSIGN_OR_RETURN(out.bits, r.Int(*w, ww, "num_bits", 8));
  ASSIGN_OR_RETURN(std::string type, r.String(*w, ww, "type"));
  ASSIGN_OR_RETURN(out.symmetric, r.Bool(*w, ww, "symmetric", true));
  ASSIGN_OR_RETURN(std::string strategy, r.String(*w, ww, "strategy"));
  ASSIGN_OR_RETURN(out.group_size, r.Int(*w, ww, "group_size", 0));
  ASSIGN_OR_RETURN(bool dynamic, r.Bool(*w, ww, "dynamic", false));
  if (dynamic) return r.Error(absl::StrCat(ww, "dynamic"), "dynamic weight quantization is not a stored format");
  if (strategy == "channel") {
    out.strategy = ScaleStrategy::kChannel;
  } else if (strategy == "tensor") {
    out.strategy = ScaleStrategy::kTensor;
  } else if (strategy == "group") {
    out.strategy = ScaleStrategy::kGroup;
    if (out.group_size <= 0) return r.Error(absl::StrCat(ww, "group_size"), "must be positive with strategy group");
  } else {
    return r.Error(absl::StrCat(ww, "strategy"),
                   absl::StrCat("'", strategy, "' is not supported (channel, tensor or group)"));
  }
  auto a = g.find("input_activations");
  out.quantized_activations = a != g.end() && a->is_object();

  if (type == "float") {
    if (out.bits != 8) return r.Error(absl::StrCat(ww, "num_bits"), "float weights must be 8-bit (FP8 E4M3)");
    if (out.strategy == ScaleStrategy::kGroup) return r.Error(absl::StrCat(ww, "strategy"), "FP8 by group is not supported");
    if (!out.symmetric) return r.Error(absl::StrCat(ww, "symmetric"), "FP8 weights must be symmetric");
    if (format != "float-quantized" && format != "naive-quantized") {
      return r.Error("format", absl::StrCat("'", format, "' with FP8 weights (expected float-quantized)"));
    }
    out.scheme = CheckpointScheme::kFp8;
    return out;
  }
  if (type != "int") return r.Error(absl::StrCat(ww, "type"), absl::StrCat("'", type, "' (expected int or float)"));
  if (out.bits == 8 && (format == "int-quantized" || format == "naive-quantized")) {
    if (!out.symmetric) return r.Error(absl::StrCat(ww, "symmetric"), "asymmetric int8 weights are not supported");
    if (out.strategy == ScaleStrategy::kGroup) return r.Error(absl::StrCat(ww, "strategy"), "int8 by group is not supported");
    out.scheme = CheckpointScheme::kInt8;
    return out;
  }
  if (out.bits == 4 && format == "pack-quantized") {
    if (out.quantized_activations) {
      return r.Error(absl::StrCat(where, "input_activations"), "4-bit weights with quantized activations are not supported");
    }
    out.scheme = CheckpointScheme::kInt4Packed;
    return out;
  }
  return r.Error("format", absl::StrCat("'", format, "' with ", out.bits,
                                        "-bit int weights is not supported (int-quantized 8-bit, pack-quantized 4-bit)"));
}

absl::StatusOr<CheckpointQuantization> ParseAwqOrGptq(const Reader& r, const json& q, bool awq) {
  CheckpointQuantization out;
  out.scheme = awq ? CheckpointScheme::kAwq : CheckpointScheme::kGptq;
  out.strategy = ScaleStrategy::kGroup;
  ASSIGN_OR_RETURN(out.bits, r.Int(q, "", "bits", 4));
  if (out.bits != 4) return r.Error("bits", absl::StrCat(out.bits, " (only 4-bit is supported)"));
  ASSIGN_OR_RETURN(out.group_size, r.Int(q, "", "group_size", 128));
  if (out.group_size == 0 || out.group_size < -1) return r.Error("group_size", "must be positive or -1");
  if (awq) {
    ASSIGN_OR_RETURN(bool zero_point, r.Bool(q, "", "zero_point", true));
    out.symmetric = !zero_point;
    ASSIGN_OR_RETURN(std::string version, r.String(q, "", "version"));
    if (!version.empty() && version != "gemm" && version != "GEMM") {
      return r.Error("version", absl::StrCat("'", version, "' (only AutoAWQ's GEMM packing is supported)"));
    }
    ASSIGN_OR_RETURN(out.ignore, r.Patterns(q, "", "modules_to_not_convert"));
  } else {
    ASSIGN_OR_RETURN(out.symmetric, r.Bool(q, "", "sym", true));
    ASSIGN_OR_RETURN(out.gptq_act_order, r.Bool(q, "", "desc_act", false));
    ASSIGN_OR_RETURN(std::string fmt, r.String(q, "", "checkpoint_format"));
    if (!fmt.empty() && fmt != "gptq") {
      return r.Error("checkpoint_format", absl::StrCat("'", fmt, "' (only the original gptq layout is supported)"));
    }
  }
  return out;
}

const char* SchemeName(CheckpointScheme s) {
  switch (s) {
    case CheckpointScheme::kNone:
      return "float";
    case CheckpointScheme::kInt8:
      return "compressed-tensors int8";
    case CheckpointScheme::kFp8:
      return "compressed-tensors FP8 E4M3";
    case CheckpointScheme::kInt4Packed:
      return "compressed-tensors int4 (pack-quantized)";
    case CheckpointScheme::kAwq:
      return "AutoAWQ int4";
    case CheckpointScheme::kGptq:
      return "AutoGPTQ int4";
  }
  return "?";
}

}  // namespace

bool CheckpointQuantization::QuantizesModule(std::string_view name) const {
  if (scheme == CheckpointScheme::kNone) return false;
  for (const std::string& p : ignore) {
    if (MatchesPattern(p, name)) return false;
  }
  if (scheme == CheckpointScheme::kAwq || scheme == CheckpointScheme::kGptq) {
    return name.starts_with("model.layers.");
  }
  for (const std::string& p : targets) {
    if (MatchesPattern(p, name)) return true;
  }
  return false;
}

std::string CheckpointQuantization::Describe() const {
  if (scheme == CheckpointScheme::kNone) return "float weights";
  std::string s = SchemeName(scheme);
  switch (strategy) {
    case ScaleStrategy::kTensor:
      absl::StrAppend(&s, ", one scale per tensor");
      break;
    case ScaleStrategy::kChannel:
      absl::StrAppend(&s, ", per-channel scales");
      break;
    case ScaleStrategy::kGroup:
      absl::StrAppend(&s, ", groups of ", group_size == -1 ? std::string("a whole row") : absl::StrCat(group_size));
      break;
  }
  if (bits == 4) absl::StrAppend(&s, symmetric ? ", symmetric" : ", zero points");
  if (quantized_activations) absl::StrAppend(&s, ", activations int8 per token (dynamic)");
  if (gptq_act_order) absl::StrAppend(&s, ", act-order");
  return s;
}

absl::StatusOr<CheckpointQuantization> ParseCheckpointQuantization(std::string_view config_json,
                                                                   const std::filesystem::path& file) {
  const Reader r(file);
  RETURN_IF_ERROR(CheckJsonNesting(config_json));
  json root;
  try {
    root = json::parse(config_json);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return absl::InvalidArgumentError(absl::StrCat(file.string(), ": not a JSON object"));
  auto q = root.find("quantization_config");
  if (q == root.end() || q->is_null()) return CheckpointQuantization{};
  if (!q->is_object()) return r.Error("", "must be an object");
  ASSIGN_OR_RETURN(std::string method, r.String(*q, "", "quant_method"));
  if (method == "compressed-tensors") return ParseCompressedTensors(r, *q);
  if (method == "awq") return ParseAwqOrGptq(r, *q, true);
  if (method == "gptq") return ParseAwqOrGptq(r, *q, false);
  return r.Error("quant_method", absl::StrCat("'", method, "' is not supported (compressed-tensors, awq, gptq)"));
}

absl::StatusOr<CheckpointQuantization> LoadCheckpointQuantization(const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / "config.json";
  std::ifstream in(file);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", file.string()));
  std::stringstream text;
  text << in.rdbuf();
  return ParseCheckpointQuantization(text.str(), file);
}

}  // namespace tandem
