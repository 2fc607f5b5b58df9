// ChatTemplate; see chat_template.h.
#include "engine/tokenizer/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/json_nesting.h"
#include "common/status_macros.h"

namespace tandem {
namespace {

using jinja::Json;

absl::StatusOr<std::string> ReadText(const std::filesystem::path& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": read failed"));
  return text.str();
}

// The special tokens tokenizer_config.json sets, each "text" or
// {"content": "text"}; absent or null ones stay undefined in the template,
// as in HF's special_tokens_map.
absl::StatusOr<Json> SpecialTokens(const Json& config) {
  Json tokens = Json::object();
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    if (it->is_string()) {
      tokens[key] = *it;
      continue;
    }
    if (it->is_object()) {
      auto content = it->find("content");
      if (content != it->end() && content->is_string()) {
        tokens[key] = *content;
        continue;
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer_config.json: `", key, "` is neither a string nor {\"content\": ...}"));
  }
  return tokens;
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDir(const std::filesystem::path& model_dir) {
  const std::filesystem::path path = model_dir / "tokenizer_config.json";
  absl::StatusOr<std::string> text = ReadText(path);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat("model has no chat template: ", path.string(), " is missing"));
  }
  RETURN_IF_ERROR(text.status());
  RETURN_IF_ERROR(CheckJsonNesting(*text));
  Json config = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not valid JSON"));
  return FromTokenizerConfig(config);
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTokenizerConfig(const Json& config) {
  if (!config.is_object()) return absl::InvalidArgumentError("tokenizer_config.json: not an object");
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    return absl::NotFoundError("model has no chat template (tokenizer_config.json has no `chat_template`)");
  }
  std::string source;
  if (it->is_string()) {
    source = it->get<std::string>();
  } else if (it->is_array()) {
    bool found = false;
    for (const Json& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        source = entry["template"].get<std::string>();
        found = true;
      }
    }
    if (!found) return absl::NotFoundError("model has no default chat template (no entry named \"default\")");
  } else {
    return absl::InvalidArgumentError("tokenizer_config.json: `chat_template` is neither a string nor a list");
  }
  ASSIGN_OR_RETURN(Json tokens, SpecialTokens(config));
  ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
  return ChatTemplate(std::move(t), std::move(tokens));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromFile(const std::filesystem::path& template_file, std::string bos_token,
                                                    std::string eos_token) {
  ASSIGN_OR_RETURN(std::string source, ReadText(template_file));
  return FromSource(source, std::move(bos_token), std::move(eos_token));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromFileForModel(const std::filesystem::path& template_file,
                                                            const std::filesystem::path& model_dir) {
  ASSIGN_OR_RETURN(std::string source, ReadText(template_file));
  Json tokens = Json::object();
  const std::filesystem::path config_path = model_dir / "tokenizer_config.json";
  absl::StatusOr<std::string> text = ReadText(config_path);
  if (text.ok()) {
    RETURN_IF_ERROR(CheckJsonNesting(*text));
    Json config = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not a JSON object"));
    ASSIGN_OR_RETURN(tokens, SpecialTokens(config));
  } else if (!absl::IsNotFound(text.status())) {
    return text.status();
  }
  ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
  return ChatTemplate(std::move(t), std::move(tokens));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(std::string_view source, std::string bos_token,
                                                      std::string eos_token) {
  ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
  return ChatTemplate(std::move(t), Json{{"bos_token", std::move(bos_token)}, {"eos_token", std::move(eos_token)}});
}

absl::StatusOr<std::string> ChatTemplate::Render(const Json& messages, bool add_generation_prompt,
                                                 const Json& extra) const {
  if (!messages.is_array()) return absl::InvalidArgumentError("chat template: messages must be a list");
  if (!extra.is_object()) return absl::InvalidArgumentError("chat template: extra variables must be an object");
  Json context = Json::object();
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it) context[it.key()] = it.value();
  for (auto it = extra.begin(); it != extra.end(); ++it) context[it.key()] = it.value();
  return template_.Render(context);
}

}  // namespace tandem
