// jinja builtins: the filters, tests and methods of the supported subset,
// and the value helpers (Python str, equality, membership) the renderer
// shares with them. Anything not listed in builtins.cc or builtins_filters.cc
// throws Error naming it ("unsupported filter 'x'").
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/tokenizer/jinja/lexer.h"
#include "engine/tokenizer/jinja/value.h"

namespace tandem::jinja {

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `index` or named `name`; nullptr when absent.
  const Value* Get(size_t index, std::string_view name) const;
  // Throws Error when more than `max_positional` positional arguments or a
  // keyword outside `names` was passed to `what`.
  void Check(const std::string& what, size_t max_positional, std::initializer_list<std::string_view> names,
             size_t pos) const;
};

// Python str() of a value; Undefined -> "". Throws on a namespace.
std::string ToStr(const Value& v, size_t pos);
// The JSON data of `v`; throws Error for Undefined or a namespace
// (`what` names the use, for the message).
const Json& DataOf(const Value& v, const std::string& what, size_t pos);
// Python ==.
bool Equal(const Value& a, const Value& b);
// Python `needle in haystack`.
bool Contains(const Value& haystack, const Value& needle, size_t pos);
// Number of code points in a UTF-8 string.
size_t CodePointCount(std::string_view s);

// Whether ApplyFilter / ApplyTest implement `name` (the parser refuses
// others up front, as jinja2 does at compile time).
bool IsKnownFilter(const std::string& name);
bool IsKnownTest(const std::string& name);

Value ApplyFilter(const std::string& name, const Value& input, const Args& args, size_t pos);
bool ApplyTest(const std::string& name, const Value& input, const Args& args, size_t pos);
Value CallMethod(const Value& object, const std::string& name, const Args& args, size_t pos);

}  // namespace tandem::jinja
