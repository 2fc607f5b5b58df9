// jinja lexer; see lexer.h.
#include "engine/tokenizer/jinja/lexer.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace tandem::jinja {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python's `\s` / str.isspace(), which jinja2's whitespace control uses:
// Unicode White_Space plus the separators U+001C..U+001F.
bool IsPySpace(char32_t cp) { return tokenizer_internal::IsWhitespace(cp) || (cp >= 0x1c && cp <= 0x1f); }

// First position in [begin, end) that is not whitespace (end if none).
size_t SkipSpaceForward(const std::string& s, size_t begin, size_t end) {
  size_t len = 0;
  while (begin < end && IsPySpace(tokenizer_internal::DecodeChar(s, begin, &len))) begin += len;
  return std::min(begin, end);
}

// Start of the whitespace run that ends at `end` and begins at or after `begin`.
size_t SkipSpaceBackward(const std::string& s, size_t begin, size_t end) {
  size_t len = 0;
  while (end > begin) {
    const size_t start = std::max(begin, tokenizer_internal::CharStart(s, end - 1));
    if (!IsPySpace(tokenizer_internal::DecodeChar(s, start, &len))) break;
    end = start;
  }
  return end;
}

// How the previous tag ended, for the text after it.
enum class TagEnd { kNone, kVariable, kBlock, kMinus, kPlus };

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

class Lexer {
 public:
  Lexer(const std::string& src, const LexOptions& options) : src_(src), options_(options) {}

  std::vector<Token> Run() {
    size_t pos = 0;
    TagEnd prev_end = TagEnd::kNone;
    const size_t n = src_.size();
    while (pos <= n) {
      size_t tag = FindTagStart(pos);
      size_t text_begin = pos;
      size_t text_end = tag;
      if (prev_end == TagEnd::kMinus) {
        text_begin = SkipSpaceForward(src_, text_begin, text_end);
      } else if (prev_end == TagEnd::kBlock && options_.trim_blocks && text_begin < text_end &&
                 src_[text_begin] == '\n') {
        ++text_begin;
      }
      char kind = 0;
      char modifier = 0;
      if (tag < n) {
        kind = src_[tag + 1];
        if (tag + 2 < n && (src_[tag + 2] == '-' || src_[tag + 2] == '+')) modifier = src_[tag + 2];
        if (modifier == '-') {
          text_end = SkipSpaceBackward(src_, text_begin, text_end);
        } else if (modifier != '+' && kind != '{' && options_.lstrip_blocks) {
          // jinja2: strip when only whitespace lies between the line's start
          // (a newline in the text, or the previous tag's end if that ended
          // a line) and the tag.
          size_t line_start = text_end;
          while (line_start > text_begin && src_[line_start - 1] != '\n') --line_start;
          const bool at_line_start = line_start > text_begin || text_begin == 0 || src_[text_begin - 1] == '\n';
          if (at_line_start && SkipSpaceBackward(src_, line_start, text_end) == line_start) text_end = line_start;
        }
      }
      if (text_end > text_begin) {
        tokens_.push_back({TokenKind::kText, src_.substr(text_begin, text_end - text_begin), text_begin});
      }
      if (tag >= n) break;
      const size_t inner = tag + 2 + (modifier != 0 ? 1 : 0);
      if (kind == '#') {
        pos = LexComment(tag, inner, &prev_end);
      } else {
        pos = LexTag(tag, inner, kind, &prev_end);
      }
    }
    tokens_.push_back({TokenKind::kEof, "", n});
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  size_t LexComment(size_t tag, size_t inner, TagEnd* end) {
    const size_t close = src_.find("#}", inner);
    if (close == std::string::npos) throw Error{"unterminated comment", tag};
    *end = TagEnd::kBlock;
    if (close > inner && src_[close - 1] == '-') *end = TagEnd::kMinus;
    if (close > inner && src_[close - 1] == '+') *end = TagEnd::kPlus;
    return close + 2;
  }

  size_t LexTag(size_t tag, size_t pos, char kind, TagEnd* end) {
    const bool is_var = kind == '{';
    tokens_.push_back({is_var ? TokenKind::kVarBegin : TokenKind::kBlockBegin, "", tag});
    const char close = is_var ? '}' : '%';
    int depth = 0;
    bool first = true;
    while (true) {
      while (pos < src_.size() && IsSpace(src_[pos])) ++pos;
      if (pos >= src_.size()) throw Error{is_var ? "unterminated '{{'" : "unterminated '{%'", tag};
      if (depth == 0) {
        const std::string_view rest(src_.data() + pos, src_.size() - pos);
        const std::string plain = std::string(1, close) + "}";
        if (rest.starts_with(plain)) {
          *end = is_var ? TagEnd::kVariable : TagEnd::kBlock;
          tokens_.push_back({is_var ? TokenKind::kVarEnd : TokenKind::kBlockEnd, "", pos});
          return pos + 2;
        }
        // `-}}`, `-%}` and `+%}` (jinja2 has no `+}}`).
        if ((rest.starts_with("-") || (!is_var && rest.starts_with("+"))) && rest.substr(1).starts_with(plain)) {
          *end = rest[0] == '-' ? TagEnd::kMinus : (is_var ? TagEnd::kVariable : TagEnd::kPlus);
          tokens_.push_back({is_var ? TokenKind::kVarEnd : TokenKind::kBlockEnd, "", pos});
          return pos + 3;
        }
      }
      const char c = src_[pos];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        std::string name = src_.substr(pos, e - pos);
        if (first && !is_var && name == "raw") throw Error{"unsupported tag 'raw'", pos};
        tokens_.push_back({TokenKind::kName, std::move(name), pos});
        pos = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = LexNumber(pos);
      } else if (c == '\'' || c == '"') {
        pos = LexString(pos);
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (std::string_view t : kTwo) {
          if (src_.compare(pos, 2, t) == 0) op = std::string(t);
        }
        if (op.empty()) {
          if (std::string_view("+-*/%~<>=()[]{},.:|").find(c) == std::string_view::npos) {
            throw Error{absl::StrCat("unexpected character '", std::string(1, c), "' in tag"), pos};
          }
          op = std::string(1, c);
          if (c == '(' || c == '[' || c == '{') ++depth;
          if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        }
        tokens_.push_back({TokenKind::kOp, op, pos});
        pos += op.size();
      }
      first = false;
    }
  }

  size_t LexNumber(size_t pos) {
    size_t e = pos;
    auto digits = [&] {
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
    };
    digits();
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      digits();
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
      if (x < src_.size() && std::isdigit(static_cast<unsigned char>(src_[x]))) {
        is_float = true;
        e = x;
        digits();
      }
    }
    std::string text;
    for (size_t i = pos; i < e; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    tokens_.push_back({is_float ? TokenKind::kFloat : TokenKind::kInt, std::move(text), pos});
    return e;
  }

  // Python string escapes, as jinja2 applies them to literals.
  size_t LexString(size_t pos) {
    const char quote = src_[pos];
    std::string out;
    size_t i = pos + 1;
    while (true) {
      if (i >= src_.size()) throw Error{"unterminated string literal", pos};
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\' || i + 1 >= src_.size()) {
        out.push_back(c);
        ++i;
        continue;
      }
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'v': out.push_back('\v'); break;
        case '\n': break;
        case 'x': case 'u': case 'U': {
          const size_t len = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          if (i + len > src_.size()) throw Error{"truncated escape in string literal", i - 2};
          uint32_t cp = 0;
          for (size_t k = 0; k < len; ++k) {
            const char h = src_[i + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) throw Error{"bad escape in string literal", i - 2};
            cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                                                                                             : (std::tolower(h) - 'a' + 10));
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) throw Error{"bad escape in string literal", i - 2};
          AppendUtf8(cp, &out);
          i += len;
          break;
        }
        default:
          if (e >= '0' && e <= '7') throw Error{"unsupported octal escape in string literal", i - 2};
          out.push_back('\\');
          out.push_back(e);
      }
    }
    tokens_.push_back({TokenKind::kString, std::move(out), pos});
    return i + 1;
  }

  const std::string& src_;
  const LexOptions& options_;
  std::vector<Token> tokens_;
};

}  // namespace

std::string NormalizeNewlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  return out;
}

std::vector<Token> Lex(const std::string& normalized_source, const LexOptions& options) {
  if (!options.keep_trailing_newline && normalized_source.ends_with('\n')) {
    const std::string trimmed = normalized_source.substr(0, normalized_source.size() - 1);
    return Lexer(trimmed, options).Run();
  }
  return Lexer(normalized_source, options).Run();
}

std::string DescribePosition(std::string_view source, size_t pos) {
  size_t line = 1;
  size_t column = 1;
  for (size_t i = 0; i < pos && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return absl::StrCat("line ", line, ", column ", column);
}

}  // namespace tandem::jinja
