// Internal to the jinja builtins (not a public API): the Python string and
// argument helpers that builtins.cc defines and builtins_filters.cc also uses.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/lexer.h"
#include "engine/tokenizer/jinja/value.h"

namespace tandem::jinja::builtins_internal {

[[noreturn]] inline void Fail(std::string message, size_t pos) { throw Error{std::move(message), pos}; }

// Byte offsets of each code point's start, plus s.size() at the end.
std::vector<size_t> CharOffsets(std::string_view s);
// Python str.strip / lstrip / rstrip; `chars` null means whitespace.
std::string PyStrip(std::string_view s, const std::string* chars, bool left, bool right);
std::string CaseMap(std::string_view s, bool upper);
// Python str.replace(old, new, count).
std::string PyReplace(const std::string& s, const std::string& from, const std::string& to, int64_t count);
const std::string& StringArg(const Value* v, const std::string& what, size_t pos);
int64_t IntArg(const Value* v, const std::string& what, size_t pos);

}  // namespace tandem::jinja::builtins_internal
