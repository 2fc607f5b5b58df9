// jinja builtins, filters half: IsKnownFilter and ApplyFilter (default,
// length, trim, tojson, join, select/map, ...); see builtins.h.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/builtins_internal.h"
#include "engine/tokenizer/utf8.h"

namespace tandem::jinja {

using namespace builtins_internal;  // NOLINT: the helpers builtins.cc shares

namespace {

// Python int(str) for the `int` filter, else nullopt (jinja2 then tries float).
bool ParseInt(std::string_view text, int64_t* out) {
  std::string s = PyStrip(text, nullptr, true, true);
  std::string digits;
  for (char c : s) {
    if (c != '_') digits.push_back(c);
  }
  if (digits.empty()) return false;
  size_t i = (digits[0] == '+' || digits[0] == '-') ? 1 : 0;
  if (i == digits.size()) return false;
  for (size_t k = i; k < digits.size(); ++k) {
    if (digits[k] < '0' || digits[k] > '9') return false;
  }
  try {
    *out = std::stoll(digits);
  } catch (...) {
    return false;
  }
  return true;
}

Value First(const Value& v, bool last, size_t pos) {
  const Json& j = DataOf(v, last ? "filter 'last'" : "filter 'first'", pos);
  if (j.is_array()) {
    if (j.empty()) return Value::Undefined("first of an empty list");
    return Value::Alias(v.data_ptr(), last ? &j.back() : &j.front());
  }
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (s.empty()) return Value::Undefined("first of an empty string");
    const std::vector<size_t> off = CharOffsets(s);
    const size_t i = last ? off.size() - 2 : 0;
    return Value(Json(s.substr(off[i], off[i + 1] - off[i])));
  }
  if (j.is_object()) {
    if (j.empty()) return Value::Undefined("first of an empty dict");
    return Value(Json(last ? (--j.end()).key() : j.begin().key()));
  }
  Fail(absl::StrCat("filter '", last ? "last" : "first", "' expects a sequence"), pos);
}

// Items of a list, keys of a dict, characters of a string (Python iteration).
Json IterItems(const Value& v, const std::string& what, size_t pos) {
  if (v.is_undefined()) return Json::array();
  const Json& j = DataOf(v, what, pos);
  if (j.is_array()) return j;
  Json out = Json::array();
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) out.push_back(it.key());
    return out;
  }
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    const std::vector<size_t> off = CharOffsets(s);
    for (size_t i = 0; i + 1 < off.size(); ++i) out.push_back(s.substr(off[i], off[i + 1] - off[i]));
    return out;
  }
  Fail(absl::StrCat(what, ": value is not iterable"), pos);
}

// jinja2's attribute lookup for selectattr/map: a dict key ("a.b" walks).
Value LookupAttribute(const Json& item, const std::string& path) {
  const Json* cur = &item;
  size_t at = 0;
  while (true) {
    const size_t dot = path.find('.', at);
    const std::string key = path.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    if (!cur->is_object() || !cur->contains(key)) return Value::Undefined(key);
    cur = &(*cur)[key];
    if (dot == std::string::npos) return Value(*cur);
    at = dot + 1;
  }
}

Value SelectFilter(const std::string& name, const Value& input, const Args& args, size_t pos) {
  const bool by_attr = name == "selectattr" || name == "rejectattr";
  const bool reject = name == "reject" || name == "rejectattr";
  const Json items = IterItems(input, absl::StrCat("filter '", name, "'"), pos);
  size_t next = 0;
  std::string attr;
  if (by_attr) attr = StringArg(args.Get(next++, ""), absl::StrCat("filter '", name, "'"), pos);
  std::string test;
  if (args.positional.size() > next) test = StringArg(&args.positional[next++], "test name", pos);
  if (!args.keyword.empty()) Fail(absl::StrCat("filter '", name, "': unexpected keyword argument"), pos);
  Args test_args;
  for (size_t i = next; i < args.positional.size(); ++i) test_args.positional.push_back(args.positional[i]);
  Json out = Json::array();
  for (const Json& item : items) {
    const Value subject = by_attr ? LookupAttribute(item, attr) : Value(item);
    const bool ok = test.empty() ? Truthy(subject) : ApplyTest(test, subject, test_args, pos);
    if (ok != reject) out.push_back(item);
  }
  return Value(std::move(out));
}

Value MapFilter(const Value& input, const Args& args, size_t pos) {
  const Json items = IterItems(input, "filter 'map'", pos);
  Json out = Json::array();
  if (const Value* attr = args.Get(99, "attribute")) {
    args.Check("filter 'map'", 0, {"attribute", "default"}, pos);
    const std::string& path = StringArg(attr, "map(attribute=)", pos);
    const Value* dflt = args.Get(99, "default");
    for (const Json& item : items) {
      Value v = LookupAttribute(item, path);
      if (v.is_undefined()) {
        if (dflt == nullptr) Fail(absl::StrCat("map: attribute '", path, "' is undefined"), pos);
        v = *dflt;
      }
      out.push_back(DataOf(v, "map", pos));
    }
    return Value(std::move(out));
  }
  if (args.positional.empty()) Fail("filter 'map' needs a filter name or attribute=", pos);
  const std::string& filter = StringArg(&args.positional[0], "filter 'map'", pos);
  Args rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Json& item : items) out.push_back(DataOf(ApplyFilter(filter, Value(item), rest, pos), "map", pos));
  return Value(std::move(out));
}

}  // namespace

bool IsKnownFilter(const std::string& name) {
  static const char* const kNames[] = {"default", "d", "length", "count", "string", "safe", "trim", "upper",
                                       "lower", "tojson", "first", "last", "join", "replace", "int", "list",
                                       "abs", "select", "reject", "selectattr", "rejectattr", "map"};
  for (const char* n : kNames) {
    if (name == n) return true;
  }
  return false;
}

Value ApplyFilter(const std::string& name, const Value& input, const Args& args, size_t pos) {
  const std::string what = absl::StrCat("filter '", name, "'");
  if (name == "default" || name == "d") {
    args.Check(what, 2, {"default_value", "boolean"}, pos);
    const Value* dflt = args.Get(0, "default_value");
    const Value* boolean = args.Get(1, "boolean");
    const bool use = input.is_undefined() || (boolean != nullptr && Truthy(*boolean) && !Truthy(input));
    if (!use) return input;
    return dflt != nullptr ? *dflt : Value(Json(""));
  }
  if (name == "length" || name == "count") {
    args.Check(what, 0, {}, pos);
    if (input.is_undefined()) return Value(Json(0));
    const Json& j = DataOf(input, what, pos);
    if (j.is_string()) return Value(Json(static_cast<int64_t>(CodePointCount(j.get_ref<const std::string&>()))));
    if (j.is_array() || j.is_object()) return Value(Json(static_cast<int64_t>(j.size())));
    Fail(absl::StrCat(what, ": value has no length"), pos);
  }
  if (name == "string") {
    args.Check(what, 0, {}, pos);
    return Value(Json(ToStr(input, pos)));
  }
  if (name == "safe") {
    args.Check(what, 0, {}, pos);
    return input;
  }
  if (name == "trim") {
    args.Check(what, 1, {"chars"}, pos);
    const Value* chars = args.Get(0, "chars");
    const std::string* set = nullptr;
    if (chars != nullptr && !(chars->is_data() && chars->data().is_null())) set = &StringArg(chars, what, pos);
    return Value(Json(PyStrip(ToStr(input, pos), set, true, true)));
  }
  if (name == "upper" || name == "lower") {
    args.Check(what, 0, {}, pos);
    return Value(Json(CaseMap(ToStr(input, pos), name == "upper")));
  }
  if (name == "tojson") {
    args.Check(what, 1, {"indent"}, pos);
    const Value* indent = args.Get(0, "indent");
    int64_t n = -1;
    if (indent != nullptr && !(indent->is_data() && indent->data().is_null())) n = IntArg(indent, what, pos);
    if (n > 64) Fail(absl::StrCat(what, ": indent too large"), pos);
    return Value(Json(PyJsonDumps(DataOf(input, what, pos), static_cast<int>(n))));
  }
  if (name == "first" || name == "last") {
    args.Check(what, 0, {}, pos);
    return First(input, name == "last", pos);
  }
  if (name == "join") {
    args.Check(what, 2, {"d", "attribute"}, pos);
    const Value* sep = args.Get(0, "d");
    const std::string separator = sep != nullptr ? ToStr(*sep, pos) : "";
    const Value* attr = args.Get(1, "attribute");
    std::string out;
    bool first = true;
    for (const Json& item : IterItems(input, what, pos)) {
      if (!first) out += separator;
      first = false;
      out += attr != nullptr ? ToStr(LookupAttribute(item, StringArg(attr, what, pos)), pos) : PyStr(item);
    }
    return Value(Json(std::move(out)));
  }
  if (name == "replace") {
    args.Check(what, 3, {"old", "new", "count"}, pos);
    const Value* count = args.Get(2, "count");
    const int64_t n = (count != nullptr && !(count->is_data() && count->data().is_null())) ? IntArg(count, what, pos) : -1;
    return Value(Json(PyReplace(ToStr(input, pos), StringArg(args.Get(0, "old"), what, pos),
                                StringArg(args.Get(1, "new"), what, pos), n)));
  }
  if (name == "int") {
    args.Check(what, 1, {"default"}, pos);
    const Value* dflt = args.Get(0, "default");
    const Json fallback = dflt != nullptr ? DataOf(*dflt, what, pos) : Json(0);
    if (input.is_undefined()) return Value(fallback);
    const Json& j = DataOf(input, what, pos);
    if (j.is_boolean()) return Value(Json(j.get<bool>() ? 1 : 0));
    if (j.is_number_integer()) return input;
    if (j.is_number_float()) {
      const double d = j.get<double>();
      if (!std::isfinite(d) || std::fabs(d) > 9e18) return Value(fallback);
      return Value(Json(static_cast<int64_t>(d)));
    }
    if (j.is_string()) {
      int64_t v = 0;
      if (ParseInt(j.get_ref<const std::string&>(), &v)) return Value(Json(v));
      char* end = nullptr;
      const std::string s = PyStrip(j.get_ref<const std::string&>(), nullptr, true, true);
      const double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(d) && std::fabs(d) < 9e18) {
        return Value(Json(static_cast<int64_t>(d)));
      }
    }
    return Value(fallback);
  }
  if (name == "list") {
    args.Check(what, 0, {}, pos);
    return Value(IterItems(input, what, pos));
  }
  if (name == "abs") {
    args.Check(what, 0, {}, pos);
    const Json& j = DataOf(input, what, pos);
    if (j.is_number_integer()) {
      const int64_t v = j.get<int64_t>();
      if (v == INT64_MIN) Fail("integer overflow", pos);
      return Value(Json(v < 0 ? -v : v));
    }
    if (j.is_number_float()) return Value(Json(std::fabs(j.get<double>())));
    Fail(absl::StrCat(what, " expects a number"), pos);
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return SelectFilter(name, input, args, pos);
  }
  if (name == "map") return MapFilter(input, args, pos);
  Fail(absl::StrCat("unsupported filter '", name, "'"), pos);
}

}  // namespace tandem::jinja
