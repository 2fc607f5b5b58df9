// jinja::Template: a parsed Jinja2-subset template (the part of Jinja that
// HuggingFace chat templates use) rendered over JSON variables. Supported:
// see docs/architecture.md ("Chat templates") and parser.h / builtins.h.
// Anything else fails Parse or Render with InvalidArgument naming the
// construct and its line and column; a render never guesses.
//
// Why hand-written: Debian 12 packages no C++ Jinja engine.
//
// Thread-safety: immutable after Parse; Render is const and may run
// concurrently.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/tokenizer/jinja/ast.h"
#include "engine/tokenizer/jinja/lexer.h"
#include "engine/tokenizer/jinja/render.h"

namespace tandem::jinja {

class Template {
 public:
  // InvalidArgument on a syntax error or an unsupported tag/operator.
  static absl::StatusOr<Template> Parse(std::string_view source, const LexOptions& options = {});

  // `context` must be an object; its members are the template's variables.
  // InvalidArgument when the template fails (unsupported filter, test or
  // method, type error, a limit of `limits` exceeded: "... at line L,
  // column C"), or calls raise_exception(msg): then the message is msg.
  absl::StatusOr<std::string> Render(const Json& context, const RenderLimits& limits = {}) const;

 private:
  Template(std::string source, std::shared_ptr<const Body> body) : source_(std::move(source)), body_(std::move(body)) {}

  std::string source_;  // newline-normalized, for error positions
  std::shared_ptr<const Body> body_;
};

}  // namespace tandem::jinja
