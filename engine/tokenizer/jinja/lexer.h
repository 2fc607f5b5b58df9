// jinja lexer: template source -> tokens. Text between tags becomes kText
// tokens with Jinja's whitespace rules already applied (`{%-`/`-%}` and the
// `{{`/`#` forms, `+` to opt out, trim_blocks, lstrip_blocks, and the
// dropped trailing newline of keep_trailing_newline=False); comments are
// dropped; tag contents become name/number/string/operator tokens.
// Newlines in the source are normalized to "\n" first, as jinja2 does.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::jinja {

// Errors inside the engine unwind as this exception and become an
// absl::Status at the Template boundary (template.cc): the parser and
// renderer are deeply recursive, and threading Status through every
// expression evaluation would double their size. It never leaves the module.
struct Error {
  std::string message;
  size_t pos;  // byte offset into the normalized source
};

enum class TokenKind { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  TokenKind kind;
  std::string text;  // text, name, operator, unescaped string, number spelling
  size_t pos;        // byte offset into the normalized source
};

struct LexOptions {
  bool trim_blocks = true;     // HF apply_chat_template's setting
  bool lstrip_blocks = true;   // likewise
  bool keep_trailing_newline = false;
};

// "\r\n" and "\r" -> "\n"; the positions in tokens and errors refer to this.
std::string NormalizeNewlines(std::string_view source);

// Throws Error on an unterminated tag, comment or string, an unexpected
// character, or a `{% raw %}` block (unsupported).
std::vector<Token> Lex(const std::string& normalized_source, const LexOptions& options);

// "line L, column C" (1-based; columns count bytes) of `pos` in `source`.
std::string DescribePosition(std::string_view source, size_t pos);

}  // namespace tandem::jinja
