// jinja renderer: walks the statement tree over a context of JSON variables
// and appends the output. Semantics follow jinja2 3.1 with HF's
// apply_chat_template environment: a missing variable, key or attribute is
// Undefined (renders as "", falsy, fails when used further); `set` inside a
// for loop is local to the iteration (namespace() carries state out);
// tojson is json.dumps(ensure_ascii=False); raise_exception(msg) fails the
// render with msg; strftime_now(fmt) formats the local time (HF's globals).
// Macros see their arguments and the template's top-level variables.
// Builtins: see builtins.cc and builtins_filters.cc.
//
// Thread-safety: a Renderer is used by one thread for one render.
#pragma once

#include <cstdint>
#include <string>

#include "engine/tokenizer/jinja/ast.h"
#include "engine/tokenizer/jinja/lexer.h"

namespace tandem::jinja {

struct RenderLimits {
  size_t max_output_bytes = 64u << 20;
  int64_t max_loop_iterations = 1'000'000;  // all loops of one render together, and range() sizes
  int max_macro_depth = 32;                  // nested macro calls (recursion)
  // Bytes of strings (and items of lists) built by ~ + * and by filters and
  // methods, all together: bounds the work of loops that grow values. Each
  // such value is also at most max_output_bytes.
  int64_t max_work_bytes = int64_t{1} << 30;
};

// Thrown by raise_exception(): the template's own message, reported as is.
struct TemplateRaised {
  std::string message;
};

// Renders `body` with the variables of `context` (an object) appended to
// *out. Throws Error (unsupported or failing construct, limit exceeded) or
// TemplateRaised.
void RenderBody(const Body& body, const Json& context, const RenderLimits& limits, std::string* out);

}  // namespace tandem::jinja
