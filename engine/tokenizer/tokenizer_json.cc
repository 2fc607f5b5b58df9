// Tokenizer::Load: reads tokenizer.json (and tokenizer_config.json when
// present) and assembles an HfTokenizer. See tokenizer.h for the contract
// and hf_tokenizer.h for the pipeline.
//
// BOS / EOS rules:
//  - bos_id: tokenizer_config.json `bos_token` (a string or {"content": ...})
//    resolved to an id, else the special token that the post_processor's
//    template puts before the text ($A). eos_id: `eos_token` likewise, else
//    the special token the template puts after the text, else the first of
//    "</s>", "<|endoftext|>", "<|end_of_text|>" that is a special token.
//  - Encode prepends bos_id when tokenizer_config.json says
//    `add_bos_token: true`, or, without that key, when the template starts
//    with a special token; `add_eos_token` / a trailing template token do the
//    same for eos_id.
//
// Thread-safety: Load is a pure function of the files.
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/json_nesting.h"
#include "common/status_macros.h"
#include "engine/tokenizer/hf_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using Json = nlohmann::json;
using tokenizer_internal::AddedToken;
using tokenizer_internal::TokenizerParts;

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (!in.good() && !in.eof()) return absl::UnavailableError(absl::StrCat(path.string(), ": read failed"));
  return buffer.str();
}

absl::StatusOr<Json> ParseJson(const std::filesystem::path& path, std::string_view text) {
  // The readers of Sequence steps recurse once per nesting level, as does
  // dump() in error messages.
  if (absl::Status s = CheckJsonNesting(text); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", s.message()));
  }
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not valid JSON"));
  return json;
}

// Prefixes an error with the file it came from.
absl::Status InFile(const std::filesystem::path& path, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(path.string(), ": ", status.message()));
}

// Special tokens that a post_processor adds before / after the text.
struct TemplateTokens {
  std::optional<std::string> before;
  std::optional<std::string> after;
};

void FindTemplateTokens(const Json& processor, TemplateTokens* out) {
  if (processor.is_null()) return;
  const std::string type = processor.value("type", "");
  if (type == "Sequence") {
    for (const Json& item : processor.at("processors")) FindTemplateTokens(item, out);
  } else if (type == "TemplateProcessing") {
    bool seen_text = false;
    for (const Json& item : processor.at("single")) {
      if (item.contains("Sequence")) {
        seen_text = true;
      } else if (item.contains("SpecialToken")) {
        std::string name = item["SpecialToken"].at("id").get<std::string>();
        // Resolve through the template's own table when it has one.
        const Json& table = processor.value("special_tokens", Json::object());
        if (table.contains(name) && !table[name].value("tokens", Json::array()).empty()) {
          name = table[name]["tokens"][0].get<std::string>();
        }
        if (!seen_text && !out->before) out->before = name;
        if (seen_text && !out->after) out->after = name;
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    out->before = processor.at("cls").at(0).get<std::string>();
    out->after = processor.at("sep").at(0).get<std::string>();
  }
}

// A tokenizer_config.json token entry: "text", {"content": "text"} or null.
std::optional<std::string> ConfigToken(const Json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const Json& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content")) return value["content"].get<std::string>();
  return std::nullopt;
}

absl::StatusOr<TokenizerParts> ParseTokenizerJson(const Json& root) {
  TokenizerParts parts;
  if (!root.contains("model") || !root["model"].is_object()) {
    return absl::InvalidArgumentError("missing 'model' object");
  }
  ASSIGN_OR_RETURN(auto model, tokenizer_internal::BpeModel::FromJson(root["model"]));
  parts.model = std::make_unique<tokenizer_internal::BpeModel>(std::move(model));
  const Json null_json;
  ASSIGN_OR_RETURN(parts.normalizer, tokenizer_internal::ParseNormalizer(root.value("normalizer", null_json)));
  ASSIGN_OR_RETURN(parts.pre_tokenizer, tokenizer_internal::ParsePreTokenizer(root.value("pre_tokenizer", null_json)));
  ASSIGN_OR_RETURN(parts.decoder, tokenizer_internal::Decoder::FromJson(root.value("decoder", null_json)));
  for (const Json& entry : root.value("added_tokens", Json::array())) {
    AddedToken token;
    token.content = entry.at("content").get<std::string>();
    // Checked before any conversion: get<int32_t>() of a float out of range
    // is undefined, and of a larger integer wraps (2^32 + 1 would be id 1).
    const Json& id = entry.at("id");
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= Tokenizer::kMaxVocabSize) {
      return absl::InvalidArgumentError(absl::StrCat("added token '", token.content, "': id ", id.dump(),
                                                     " is not an integer in [0, ", Tokenizer::kMaxVocabSize, ")"));
    }
    token.id = static_cast<int32_t>(id.get<int64_t>());
    token.special = entry.value("special", false);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    token.single_word = entry.value("single_word", false);
    token.normalized = entry.value("normalized", !token.special);
    parts.added_tokens.push_back(std::move(token));
  }
  return parts;
}

// Fills bos/eos and add_bos/add_eos from tokenizer_config.json (`config`,
// null when absent) and the post_processor; needs the vocabulary to resolve
// token strings, so it runs on a built tokenizer's parts via `lookup`.
template <typename Lookup>
absl::Status ResolveSpecialTokens(const Json& root, const Json& config, Lookup lookup, TokenizerParts* parts) {
  TemplateTokens tmpl;
  FindTemplateTokens(root.value("post_processor", Json()), &tmpl);
  auto resolve = [&](const std::optional<std::string>& name,
                     const char* what) -> absl::StatusOr<std::optional<int32_t>> {
    if (!name.has_value()) return std::optional<int32_t>();
    std::optional<int32_t> id = lookup(*name);
    if (!id.has_value())
      return absl::InvalidArgumentError(absl::StrCat(what, " '", *name, "' is not in the vocabulary"));
    return id;
  };
  const std::optional<std::string> bos_name = ConfigToken(config, "bos_token");
  const std::optional<std::string> eos_name = ConfigToken(config, "eos_token");
  ASSIGN_OR_RETURN(parts->bos_id, resolve(bos_name ? bos_name : tmpl.before, "bos_token"));
  ASSIGN_OR_RETURN(parts->eos_id, resolve(eos_name ? eos_name : tmpl.after, "eos_token"));
  if (!parts->eos_id.has_value()) {
    for (const char* name : {"</s>", "<|endoftext|>", "<|end_of_text|>"}) {
      for (const AddedToken& t : parts->added_tokens) {
        if (t.special && t.content == name && !parts->eos_id) parts->eos_id = t.id;
      }
    }
  }
  parts->add_bos = config.contains("add_bos_token") && config["add_bos_token"].is_boolean()
                       ? config["add_bos_token"].get<bool>()
                       : tmpl.before.has_value();
  parts->add_eos = config.contains("add_eos_token") && config["add_eos_token"].is_boolean()
                       ? config["add_eos_token"].get<bool>()
                       : tmpl.after.has_value();
  if (parts->add_bos && !parts->bos_id)
    return absl::InvalidArgumentError("add_bos_token is true but there is no bos_token");
  if (parts->add_eos && !parts->eos_id)
    return absl::InvalidArgumentError("add_eos_token is true but there is no eos_token");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::filesystem::path& dir) {
  // `dir` may also name the tokenizer.json file itself.
  std::error_code error;
  const bool is_file = std::filesystem::is_regular_file(dir, error);
  const std::filesystem::path json_path = is_file ? dir : dir / "tokenizer.json";
  const std::filesystem::path config_path = json_path.parent_path() / "tokenizer_config.json";
  ASSIGN_OR_RETURN(std::string json_text, ReadFile(json_path));
  std::optional<std::string> config_text;
  if (std::filesystem::exists(config_path)) {
    ASSIGN_OR_RETURN(config_text, ReadFile(config_path));
  }
  return LoadFromJson(json_text, config_text, json_path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromJson(std::string_view tokenizer_json,
                                                                   std::optional<std::string_view> tokenizer_config_json,
                                                                   const std::filesystem::path& json_path) {
  const std::filesystem::path config_path = json_path.parent_path() / "tokenizer_config.json";
  ASSIGN_OR_RETURN(Json root, ParseJson(json_path, tokenizer_json));
  Json config = Json::object();
  if (tokenizer_config_json.has_value()) {
    ASSIGN_OR_RETURN(config, ParseJson(config_path, *tokenizer_config_json));
    if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not an object"));
  }
  if (!root.is_object()) return absl::InvalidArgumentError(absl::StrCat(json_path.string(), ": not an object"));
  // nlohmann::json reports type mismatches by exception; keep them inside.
  try {
    absl::StatusOr<TokenizerParts> parts = ParseTokenizerJson(root);
    if (!parts.ok()) return InFile(json_path, parts.status());
    // Resolve names against the model vocabulary and the added tokens.
    const auto& vocab = parts->model->vocab();
    const std::vector<AddedToken>& added = parts->added_tokens;
    auto lookup = [&](const std::string& name) -> std::optional<int32_t> {
      for (const AddedToken& t : added) {
        if (t.content == name) return t.id;
      }
      if (auto it = vocab.find(name); it != vocab.end()) return it->second;
      return std::nullopt;
    };
    absl::Status status = ResolveSpecialTokens(root, config, lookup, &*parts);
    if (!status.ok()) return InFile(config_path, status);
    return std::make_unique<tokenizer_internal::HfTokenizer>(std::move(*parts));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(json_path.string(), ": unexpected structure: ", e.what()));
  }
}

}  // namespace tandem
