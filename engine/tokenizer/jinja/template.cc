// jinja::Template; see template.h.
#include "engine/tokenizer/jinja/template.h"

#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/parser.h"

namespace tandem::jinja {

absl::StatusOr<Template> Template::Parse(std::string_view source, const LexOptions& options) {
  std::string normalized = NormalizeNewlines(source);
  try {
    auto body = std::make_shared<const Body>(jinja::Parse(Lex(normalized, options)));
    return Template(std::move(normalized), std::move(body));
  } catch (const Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("template syntax: ", e.message, " at ", DescribePosition(normalized, e.pos)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("template syntax: ", e.what()));
  }
}

absl::StatusOr<std::string> Template::Render(const Json& context, const RenderLimits& limits) const {
  if (!context.is_object()) return absl::InvalidArgumentError("template variables must be an object");
  if (JsonDepth(context, kMaxValueDepth) > kMaxValueDepth) {
    return absl::InvalidArgumentError(absl::StrCat("template variables nest deeper than ", kMaxValueDepth, " levels"));
  }
  std::string out;
  try {
    RenderBody(*body_, context, limits, &out);
  } catch (const Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("template render: ", e.message, " at ", DescribePosition(source_, e.pos)));
  } catch (const TemplateRaised& e) {
    return absl::InvalidArgumentError(e.message);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("template render: ", e.what()));
  }
  return out;
}

}  // namespace tandem::jinja
