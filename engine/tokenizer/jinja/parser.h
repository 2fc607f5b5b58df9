// jinja parser: tokens -> statement tree (ast.h). Recursive descent with
// jinja2's operator precedence, from loosest to tightest:
//   `a if c else b`, or, and, not, comparisons (chained; in / not in),
//   + -, ~, * / // %, unary - +, then postfix (.attr, [i], [a:b:c], call)
//   followed by filters (`| f(...)`) and tests (`is [not] t(...)`).
// Tags: if/elif/else/endif, for/else/endfor (with tuple targets and an `if`
// filter), set (name, namespace attribute, block form), break, continue,
// macro/endmacro (parameters with defaults; no varargs/kwargs/caller), and
// HF's generation/endgeneration (its body renders as is). Anything else
// (call, filter, include, raw, `**`, an unknown filter or test, ...) throws
// Error naming the construct.
//
// Thread-safety: pure function.
#pragma once

#include <vector>

#include "engine/tokenizer/jinja/ast.h"
#include "engine/tokenizer/jinja/lexer.h"

namespace tandem::jinja {

// Nesting bound for tags and expressions together; deeper templates are
// refused (throws Error) rather than risking the stack.
inline constexpr int kMaxParseDepth = 128;

// Throws Error on a syntax error or an unsupported construct.
Body Parse(const std::vector<Token>& tokens);

}  // namespace tandem::jinja
