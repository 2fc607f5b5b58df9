// CheckJsonNesting: refuses JSON text nested deeper than a bound, before it
// is parsed. nlohmann::json parses and frees any depth without recursion,
// but dump() (error messages quote offending values) and our own readers of
// recursive sections (tokenizer "Sequence" steps) recurse once per level, so
// a file of a few MB holding a million nested brackets would overflow the
// stack. Real configuration files nest under 10 levels.
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tandem {

inline constexpr int kMaxJsonNesting = 128;

// InvalidArgument naming the byte offset where `text` first opens more
// than `max_depth` arrays or objects at once (brackets inside strings do
// not count); OK otherwise, including for text that is not valid JSON
// (the parser reports that).
inline absl::Status CheckJsonNesting(std::string_view text, int max_depth = kMaxJsonNesting) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, whatever it is
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON nested deeper than ", max_depth, " levels at byte ", i));
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return absl::OkStatus();
}

}  // namespace tandem
