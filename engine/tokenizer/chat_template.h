// ChatTemplate: a model's chat template (tokenizer_config.json
// `chat_template`, or a file given with --chat-template) rendered the way
// HuggingFace's apply_chat_template renders it: jinja2 with
// trim_blocks=True and lstrip_blocks=True, variables `messages`,
// `add_generation_prompt`, the special tokens the config sets (`bos_token`,
// `eos_token`, `unk_token`, `pad_token`, as strings) plus any extra
// variables; `tools` and `documents` stay undefined unless given. The rendered prompt already holds the template's special
// tokens (e.g. bos_token), so encode it without adding BOS again.
//
// Thread-safety: immutable after loading; Render may run concurrently.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tokenizer/jinja/template.h"

namespace tandem {

class ChatTemplate {
 public:
  // From `model_dir`/tokenizer_config.json. NotFound when the file or its
  // `chat_template` is missing (a model without a chat template: the HTTP
  // layer answers /v1/chat/completions with 400); for the list form
  // [{name, template}], the entry named "default". InvalidArgument when the
  // config is malformed or the template does not parse.
  static absl::StatusOr<ChatTemplate> FromModelDir(const std::filesystem::path& model_dir);
  // Same, from the config's parsed JSON.
  static absl::StatusOr<ChatTemplate> FromTokenizerConfig(const jinja::Json& config);
  // The template text of `template_file` (--chat-template FILE); bos/eos
  // strings come from the caller (usually the model's tokenizer_config.json).
  static absl::StatusOr<ChatTemplate> FromFile(const std::filesystem::path& template_file, std::string bos_token,
                                               std::string eos_token);
  static absl::StatusOr<ChatTemplate> FromSource(std::string_view source, std::string bos_token,
                                                 std::string eos_token);
  // --chat-template FILE for a model: the template from `template_file`, the
  // special tokens from `model_dir`/tokenizer_config.json when it exists
  // (its own chat_template, if any, is ignored).
  static absl::StatusOr<ChatTemplate> FromFileForModel(const std::filesystem::path& template_file,
                                                       const std::filesystem::path& model_dir);

  // `messages`: a JSON array of message objects (role, content, ...).
  // `extra`: an object of further variables (e.g. tools); its members
  // override the defaults above. InvalidArgument when messages is not an
  // array, or the template fails or raises (the message is the template's).
  absl::StatusOr<std::string> Render(const jinja::Json& messages, bool add_generation_prompt,
                                     const jinja::Json& extra = jinja::Json::object()) const;

  // The token variables passed to the template, e.g. {"bos_token": "<s>"}.
  const jinja::Json& special_tokens() const { return special_tokens_; }

 private:
  ChatTemplate(jinja::Template t, jinja::Json special_tokens)
      : template_(std::move(t)), special_tokens_(std::move(special_tokens)) {}

  jinja::Template template_;
  jinja::Json special_tokens_;  // object: variable name -> token string
};

}  // namespace tandem
