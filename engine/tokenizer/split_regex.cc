// RE2-backed split regex with lookahead emulation; see split_regex.h.
#include "engine/tokenizer/split_regex.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"
#include "re2/re2.h"

namespace tandem::tokenizer_internal {
namespace {

// Unicode White_Space, as the body of an RE2 character class.
constexpr std::string_view kWhitespaceClassBody =
    "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
// Unicode word characters (approximation of UTS#18 \w), as a class body.
constexpr std::string_view kWordClassBody = "\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}";
// The lookahead alternative that is emulated.
constexpr std::string_view kLookaheadAlt = "\\s+(?!\\S)";

absl::Status Unsupported(std::string_view pattern, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("split regex '", AsAbsl(pattern), "': unsupported construct ",
                                                 AsAbsl(what), " (RE2 has no equivalent)"));
}

}  // namespace

absl::StatusOr<std::string> TranslatePattern(std::string_view pattern, bool* has_lookahead_group) {
  *has_lookahead_group = false;
  std::string out;
  out.reserve(pattern.size() * 2);
  int depth = 0;                  // parenthesis nesting outside classes
  bool in_class = false;          // inside [...]
  bool alt_start = true;          // at the start of a top-level alternative
  bool after_quantifier = false;  // the last item copied was a quantifier
  size_t i = 0;
  while (i < pattern.size()) {
    const char c = pattern[i];
    if (!in_class && depth == 0 && alt_start && pattern.substr(i).starts_with(kLookaheadAlt)) {
      const size_t after = i + kLookaheadAlt.size();
      if (after == pattern.size() || pattern[after] == '|') {
        if (*has_lookahead_group) return Unsupported(pattern, "'\\s+(?!\\S)' twice");
        absl::StrAppend(&out, "([", AsAbsl(kWhitespaceClassBody), "]+)");
        *has_lookahead_group = true;
        i = after;
        alt_start = false;
        continue;
      }
    }
    alt_start = false;
    const bool quantified = after_quantifier;
    after_quantifier = false;
    if (c == '\\') {
      if (i + 1 >= pattern.size()) return Unsupported(pattern, "trailing backslash");
      const char e = pattern[i + 1];
      i += 2;
      switch (e) {
        case 's':
          absl::StrAppend(&out, in_class ? "" : "[", AsAbsl(kWhitespaceClassBody), in_class ? "" : "]");
          break;
        case 'S':
          if (in_class) return Unsupported(pattern, "\\S inside a character class");
          absl::StrAppend(&out, "[^", AsAbsl(kWhitespaceClassBody), "]");
          break;
        case 'w':
          absl::StrAppend(&out, in_class ? "" : "[", AsAbsl(kWordClassBody), in_class ? "" : "]");
          break;
        case 'W':
          if (in_class) return Unsupported(pattern, "\\W inside a character class");
          absl::StrAppend(&out, "[^", AsAbsl(kWordClassBody), "]");
          break;
        case 'd':
          out += "\\p{Nd}";
          break;
        case 'D':
          out += "\\P{Nd}";
          break;
        default:
          if (e >= '1' && e <= '9') return Unsupported(pattern, "backreference");
          if (e == 'p' || e == 'P') {
            // \p{Name} or \pL: copy through unchanged.
            out += '\\';
            out += e;
            if (i < pattern.size() && pattern[i] == '{') {
              const size_t close = pattern.find('}', i);
              if (close == std::string_view::npos) return Unsupported(pattern, "unterminated \\p{");
              out.append(pattern.substr(i, close + 1 - i));
              i = close + 1;
            }
            break;
          }
          out += '\\';
          out += e;
          break;
      }
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      if (c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
        // POSIX class [:alpha:]: copy through to its closing ":]".
        const size_t close = pattern.find(":]", i + 2);
        if (close == std::string_view::npos) return Unsupported(pattern, "unterminated [:class:]");
        out.append(pattern.substr(i, close + 2 - i));
        i = close + 2;
        continue;
      }
      out += c;
      ++i;
      continue;
    }
    switch (c) {
      case '[':
        in_class = true;
        out += c;
        ++i;
        // A ']' right after '[' or '[^' is a literal member.
        if (i < pattern.size() && pattern[i] == '^') out += pattern[i++];
        if (i < pattern.size() && pattern[i] == ']') out += "\\]", ++i;
        continue;
      case '(': {
        std::string_view rest = pattern.substr(i);
        if (rest.starts_with("(?=") || rest.starts_with("(?!") || rest.starts_with("(?<=") ||
            rest.starts_with("(?<!")) {
          return Unsupported(pattern, "lookaround");
        }
        if (rest.starts_with("(?>")) return Unsupported(pattern, "atomic group");
        ++depth;
        if (rest.starts_with("(?<") || rest.starts_with("(?P<")) {
          // Named group -> non-capturing group.
          const size_t close = rest.find('>');
          if (close == std::string_view::npos) return Unsupported(pattern, "unterminated group name");
          out += "(?:";
          i += close + 1;
        } else if (rest.starts_with("(?")) {
          out += "(?";
          i += 2;
        } else {
          out += "(?:";
          ++i;
        }
        continue;
      }
      case ')':
        --depth;
        break;
      case '|':
        if (depth == 0) alt_start = true;
        break;
      case '+':
        // A '+' right after a quantifier makes it possessive: drop it.
        if (quantified) {
          ++i;
          continue;
        }
        after_quantifier = true;
        break;
      case '?':
      case '*':
      case '}':
        after_quantifier = true;
        break;
      default:
        break;
    }
    out += c;
    ++i;
  }
  if (in_class) return Unsupported(pattern, "unterminated character class");
  return out;
}

SplitRegex::SplitRegex(std::unique_ptr<re2::RE2> re, bool has_lookahead_group)
    : re_(std::move(re)), has_lookahead_group_(has_lookahead_group) {}

SplitRegex::~SplitRegex() = default;

absl::StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::Create(std::string_view pattern) {
  bool has_group = false;
  auto translated = TranslatePattern(pattern, &has_group);
  if (!translated.ok()) return translated.status();
  re2::RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(int64_t{64} << 20);  // Unicode classes make big DFAs
  auto re = std::make_unique<re2::RE2>(*translated, options);
  if (!re->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("split regex '", AsAbsl(pattern), "' does not compile as '", *translated, "': ", re->error()));
  }
  return std::unique_ptr<SplitRegex>(new SplitRegex(std::move(re), has_group));
}

absl::StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::CreateLiteral(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("split pattern: empty string");
  re2::RE2::Options options;
  options.set_literal(true);
  options.set_log_errors(false);
  auto re = std::make_unique<re2::RE2>(re2::StringPiece(text.data(), text.size()), options);
  if (!re->ok()) return absl::InvalidArgumentError(absl::StrCat("split string '", AsAbsl(text), "': ", re->error()));
  return std::unique_ptr<SplitRegex>(new SplitRegex(std::move(re), false));
}

void SplitRegex::FindMatches(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  const re2::StringPiece input(text.data(), text.size());
  re2::StringPiece groups[2];
  const int num_groups = has_lookahead_group_ ? 2 : 1;
  size_t pos = 0;
  while (pos <= text.size()) {
    if (!re_->Match(input, pos, text.size(), re2::RE2::UNANCHORED, groups, num_groups)) break;
    const size_t begin = static_cast<size_t>(groups[0].data() - text.data());
    size_t end = begin + groups[0].size();
    if (end == begin) {  // empty match: step over one character
      if (begin >= text.size()) break;
      pos = begin + CharLen(text, begin);
      continue;
    }
    if (has_lookahead_group_ && groups[1].data() != nullptr && end < text.size()) {
      size_t next_len = 0;
      const bool next_is_space = IsWhitespace(DecodeChar(text, end, &next_len));
      if (!next_is_space) {
        // Give back the last character when the match has more than one.
        size_t last = end - 1;
        while (last > begin && (static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) --last;
        if (last > begin) end = last;
      }
    }
    matches->emplace_back(begin, end);
    pos = end;
  }
}

}  // namespace tandem::tokenizer_internal
